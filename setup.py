"""Build the compiled kernel; everything else about the package is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "numlog_trio._kernel",
                ["numlog_trio/_kernel.pyx"],
                # -O3 for the loops; no -march: a wheel built here must run on any x86-64.
                extra_compile_args=["-O3"],
            )
        ]
    )
)
