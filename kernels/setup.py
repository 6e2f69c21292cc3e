"""Builds `anvyl_kernels._ext` with CMake through MLX's own extension helper."""

from mlx import extension
from setuptools import setup

if __name__ == "__main__":
    setup(
        ext_modules=[extension.CMakeExtension("anvyl_kernels._ext")],
        cmdclass={"build_ext": extension.CMakeBuild},
        zip_safe=False,
    )
