SUMMARY = "rcp: remote charge port, links EVerest satellite boards to the main board"
DESCRIPTION = "Python/Twisted implementation of EVerest's remotechargeport \
               modules (SatelliteAgent, SatelliteController, SystemAggregator), \
               msgpack-rpc over mutual TLS, wire-compatible with the C++ original."
SECTION = "net"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://setup.py;beginline=12;endline=12;md5=95b52ba3a4f69505ee2d3386fdb25eec"

# The layer lives in rcp's repository: the recipe builds the checkout it
# sits in (meta-rcp/README.md says how to build another revision).
inherit externalsrc
EXTERNALSRC = "${@os.path.abspath(os.path.join(d.getVar('THISDIR'), '..', '..', '..'))}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"
# externalsrc takes the sources from EXTERNALSRC: nothing to fetch.
SRC_URI = ""

inherit python_setuptools_build_meta systemd useradd qemu

# EVerest's systemd unit and the board's EVerest config; the units run only
# while that unit runs, and only on boards whose config has their module.
RCP_EVEREST_UNIT ?= "everest.service"
RCP_EVEREST_CONFIG ?= "${sysconfdir}/everest/config.yaml"
# main board: one rcp-controller@ instance per satellite, each reading
# ${sysconfdir}/rcp/rcp-controller-<instance>.yaml
RCP_CONTROLLER_INSTANCES ?= "satellite-1"

do_install:append() {
    S="${S}" D="${D}" bindir="${bindir}" sysconfdir="${sysconfdir}" datadir="${datadir}" libexecdir="${libexecdir}" systemd_system_unitdir="${systemd_system_unitdir}" RCP_EVEREST_UNIT="${RCP_EVEREST_UNIT}" RCP_EVEREST_CONFIG="${RCP_EVEREST_CONFIG}" RCP_GROUP="rcp" sh ${S}/meta-rcp/scripts/rcp-install-files
}

PACKAGES =+ "${PN}-agent ${PN}-controller"

FILES:${PN} += "\
    ${PYTHON_SITEPACKAGES_DIR}/rcp \
    ${PYTHON_SITEPACKAGES_DIR}/rcp-*.dist-info \
    ${PYTHON_SITEPACKAGES_DIR}/twisted/plugins/rcp_plugins.py \
    ${PYTHON_SITEPACKAGES_DIR}/twisted/plugins/__pycache__/rcp_plugins.*.pyc \
    ${bindir}/rcp \
    ${libexecdir}/rcp/rcp-unit-helper \
    ${libexecdir}/rcp/rcp-plugin-cache \
    ${datadir}/everest/interfaces/satellite.yaml \
"
FILES:${PN}-agent = "\
    ${systemd_system_unitdir}/rcp-agent.service \
    ${libexecdir}/everest/modules/SatelliteAgent \
    ${sysconfdir}/rcp/examples/rcp-agent.yaml \
"
FILES:${PN}-controller = "\
    ${systemd_system_unitdir}/rcp-controller@.service \
    ${libexecdir}/everest/modules/SatelliteController \
    ${libexecdir}/everest/modules/SystemAggregator \
    ${sysconfdir}/rcp/examples/rcp-controller.yaml \
"

RDEPENDS:${PN} += "\
    python3-automat \
    python3-core \
    python3-cryptography \
    python3-idna \
    python3-ifaddr \
    python3-msgpack \
    python3-paho-mqtt \
    python3-pyopenssl \
    python3-pyyaml \
    python3-service-identity \
    python3-twisted-core \
    python3-twisted-protocols \
    python3-twisted-web \
    python3-zeroconf \
"
RDEPENDS:${PN}-agent += "${PN}"
RDEPENDS:${PN}-controller += "${PN} curl"

SYSTEMD_PACKAGES = "${PN}-agent ${PN}-controller"
SYSTEMD_SERVICE:${PN}-agent = "rcp-agent.service"
SYSTEMD_SERVICE:${PN}-controller = "${@' '.join('rcp-controller@%s.service' % i for i in d.getVar('RCP_CONTROLLER_INSTANCES').split())}"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --user-group --no-create-home --home-dir /nonexistent --shell /sbin/nologin rcp"

# Twisted's plugin cache, made when the image is built so that a read-only
# root works: the image's own Python under qemu; where qemu cannot run it,
# the postinst runs at first boot instead (a read-only image then fails to
# build, saying so).
PACKAGE_WRITE_DEPS += "qemu-native"
pkg_postinst:${PN}() {
    if [ -n "$D" ]; then
        ${@qemu_run_binary(d, '$D', '${bindir}/python3')} $D${libexecdir}/rcp/rcp-plugin-cache $D || exit 1
    else
        ${libexecdir}/rcp/rcp-plugin-cache
    fi
}
