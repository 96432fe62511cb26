"""The packaging rule pyproject.toml cannot say: the top-level playbooks/ folder (where scripts
and ansible-lint expect it) ships as the package ``aiorch.playbooks``, in a built wheel and in an
editable install alike, so a hub installed from wheels alone can provision. Each of its folders
is listed as a package with all its files as data (setuptools ships data per package)."""

from setuptools import find_namespace_packages, find_packages, setup

PLAYBOOKS = [
    "aiorch.playbooks",
    *(
        f"aiorch.playbooks.{name}"
        for name in find_namespace_packages("playbooks", exclude=["*__pycache__*"])
    ),
]

setup(
    packages=[*find_packages(include=["aiorch*", "edge_agent*"]), *PLAYBOOKS],
    package_dir={"aiorch.playbooks": "playbooks"},
    package_data={
        "aiorch.repo": ["install-hub.sh"],
        "aiorch.metal": ["ramdisk_init.sh"],
        "aiorch.hub.ui": [
            "templates/*.html",
            "static/*",
            "static/vendor/*",
            "static/vendor/licenses/*",
        ],
        **{package: ["*"] for package in PLAYBOOKS},
    },
)
