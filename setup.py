"""Builds the native proof-of-work extension ``bmnode.pow._native`` from pow_ext/ with Cython."""

import os
import sys

from setuptools import setup

# Under PEP 517 build isolation the source tree is not on sys.path; pow_ext/ lives beside us.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pow_ext.build import native_extensions, BuildExt  # noqa: E402

setup(ext_modules=native_extensions(), cmdclass={"build_ext": BuildExt})
