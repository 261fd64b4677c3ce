SUMMARY = "Finite-state machines for Python (Automat)"
DESCRIPTION = "Automat builds finite-state machines from Python classes; \
               rcp needs its TypeMachineBuilder (Automat 24.8 and later). \
               meta-rcp ships this recipe for scarthgap only, whose \
               meta-python has Automat 22.10."
HOMEPAGE = "https://github.com/glyph/automat"
SECTION = "devel/python"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=4ad213bcca81688e94593e5f60c87477"

SRC_URI[sha256sum] = "0017591a5477066e90d26b0e696ddc143baafd87b588cfac8100bc6be9634de0"

inherit pypi python_hatchling

DEPENDS += "python3-hatch-vcs-native"

RDEPENDS:${PN} += "python3-core python3-typing"
