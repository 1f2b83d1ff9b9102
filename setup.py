"""The build's one addition to pyproject.toml: the `models/` and `splits/` folders at the top of
the repository travel in the wheel as the package data `karyoflow.models` and `karyoflow.splits`
(found at run time by karyoflow.resources)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["karyoflow*", "infra*", "db*", "workers*", "api*", "service*"])
    + ["karyoflow.models", "karyoflow.splits"],
    package_dir={"karyoflow.models": "models", "karyoflow.splits": "splits"},
)
