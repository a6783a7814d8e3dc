"""Only what setup.cfg cannot say: bundles/ (configuration, at the top of the repository) is
shipped inside the wheel as the package ``mimtl._bundles``, which ``find:`` cannot discover."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["mimtl", "mimtl.*"]) + ["mimtl._bundles"])
