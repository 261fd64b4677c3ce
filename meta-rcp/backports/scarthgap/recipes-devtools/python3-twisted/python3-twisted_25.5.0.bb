SUMMARY = "Event-driven networking engine for Python (Twisted)"
DESCRIPTION = "Twisted, the version whinlatter ships, for scarthgap, whose \
               meta-python has 24.3.0: rcp needs 24.10 or later. One package \
               with all of Twisted; it stands in for the split packages of \
               meta-python's recipe (python3-twisted-core and the others)."
HOMEPAGE = "https://twisted.org"
SECTION = "devel/python"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=5316a448a61a38d722c291f78d915d11"

SRC_URI[sha256sum] = "1deb272358cb6be1e3e8fc6f9c8b36f78eb0fa7c2233d2dbe11ec6fee04ea316"

inherit pypi python_hatchling

DEPENDS += "python3-hatch-fancy-pypi-readme-native python3-incremental-native"

RDEPENDS:${PN} += "\
    python3-asyncio \
    python3-attrs \
    python3-automat \
    python3-constantly \
    python3-core \
    python3-hyperlink \
    python3-idna \
    python3-incremental \
    python3-pyopenssl \
    python3-service-identity \
    python3-typing-extensions \
    python3-zopeinterface \
"

RPROVIDES:${PN} += "\
    ${PN}-conch \
    ${PN}-core \
    ${PN}-mail \
    ${PN}-names \
    ${PN}-pair \
    ${PN}-protocols \
    ${PN}-runner \
    ${PN}-test \
    ${PN}-web \
    ${PN}-words \
    ${PN}-zsh \
"
