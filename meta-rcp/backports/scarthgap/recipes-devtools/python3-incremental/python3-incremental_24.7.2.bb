SUMMARY = "Versions for Python projects (Incremental)"
DESCRIPTION = "Incremental gives Twisted its version numbers and builds \
               them into its packages. Twisted 25.5.0 (meta-rcp's backport) \
               needs 24.7 or later to build; scarthgap's meta-python has 22.10."
HOMEPAGE = "https://github.com/twisted/incremental"
SECTION = "devel/python"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=6ca9b07f08e2c72d48c74d363d1e0e15"

SRC_URI[sha256sum] = "fb4f1d47ee60efe87d4f6f0ebb5f70b9760db2b2574c59c8e8912be4ebd464c9"

inherit pypi python_setuptools_build_meta

RDEPENDS:${PN} += "python3-core python3-setuptools"

BBCLASSEXTEND = "native nativesdk"
