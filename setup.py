from setuptools import find_packages, setup

setup(
    name="rcp",
    version="0.1.0",
    description=(
        "Remote charge port: links satellite EVerest boards to the main board "
        "of one charging station (msgpack-rpc over mutual TLS, Twisted)"
    ),
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.11",
    # twisted.plugins has no __init__.py on purpose, so find_packages() cannot
    # see it; list it by hand and keep tests/ out of the installation.
    packages=[*find_packages(include=["rcp", "rcp.*"]), "twisted.plugins"],
    package_data={"rcp": ["py.typed"]},
    install_requires=[
        "twisted[tls] >= 24.10",
        "automat >= 24.8",
        "msgpack >= 1.0",
        "pyyaml >= 6.0",
        "cryptography >= 41",
        "paho-mqtt >= 2.0",
        "zeroconf >= 0.120",
    ],
    extras_require={
        "test": ["hypothesis >= 6", "pynvim >= 0.5", "pyftpdlib >= 1.5"],
        "dev": [
            "hypothesis >= 6",
            "pynvim >= 0.5",
            "pyftpdlib >= 1.5",
            "mypy >= 1.10",
            "mypy-zope >= 1.0",
            "ruff >= 0.5",
            "types-PyYAML",
            "oelint-adv >= 6",
            "build >= 1",
            "installer >= 0.7",
            "wheel",
        ],
    },
    entry_points={"console_scripts": ["rcp = rcp.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Networking",
    ],
)
