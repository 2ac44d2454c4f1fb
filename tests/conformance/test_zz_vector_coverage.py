"""Fails when any entry of any shared vector file was not checked by a conformance test.

It runs last (conftest orders it so); run the whole conformance suite for it to mean something.
"""

from tests import vectors


def test_every_vector_entry_was_checked() -> None:
    missing = []
    for name in vectors.files():
        for section in vectors.sections(name):
            total = len(vectors.entries(name, section))
            seen = vectors.CONSUMED.get((name, section), set())
            if len(seen) != total:
                unchecked = sorted(set(range(total)) - seen)
                missing.append(f"{name}.json:{section} entries {unchecked[:10]} of {total}")
    assert not missing, "vector entries nobody checked:\n" + "\n".join(missing)
