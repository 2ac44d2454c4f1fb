"""Builds the native proof-of-work extension ``bmnode.pow._native`` from pow_ext/ with Cython."""

from setuptools import setup

from pow_ext.build import native_extensions, BuildExt

setup(ext_modules=native_extensions(), cmdclass={"build_ext": BuildExt})
