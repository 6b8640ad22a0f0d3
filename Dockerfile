# stealth-mtd in a privileged container: the README's set-up step and test command, nothing else.
#
#   docker build -t stealth-mtd .
#   docker run --rm --privileged stealth-mtd            # = make test
#
# The build runs without privileges, so `make setup` runs in build mode
# (STEALTH_MTD_SETUP_BUILD=1: Debian packages + .venv, no network-namespace probe, no OVS start);
# at run time `make test` runs `make setup` again, which then checks namespaces and starts the
# container's own Open vSwitch daemons (userspace datapath unless the host has the kernel module).
#
# BASE: any Debian 12 image. No registry reachable? Make one locally:
#   debootstrap --variant=minbase bookworm DIR && tar -C DIR -c . | podman import - debian:bookworm
# (scripts/container-test.sh does exactly this, see `sudo make container-test`).
ARG BASE=debian:bookworm
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/stealth-mtd
COPY . /opt/stealth-mtd

# Optional, for networks that intercept TLS: a CA bundle (PEM, the full bundle pip should trust)
# placed in the build context at .container/ca-bundle.crt is given to pip via /etc/pip.conf.
# Without the file nothing changes. apt needs nothing: deb.debian.org is plain http, signed.
RUN if [ -f .container/ca-bundle.crt ]; then \
        install -D -m 0644 .container/ca-bundle.crt /etc/stealth-mtd/ca-bundle.crt \
        && printf '[global]\ncert = /etc/stealth-mtd/ca-bundle.crt\n' > /etc/pip.conf \
        && echo "pip trusts the CA bundle from .container/ca-bundle.crt"; \
    fi; \
    rm -rf .container

# make is what runs the README's commands; everything else comes from the set-up step.
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends make \
    && STEALTH_MTD_SETUP_BUILD=1 make setup \
    && rm -rf /var/lib/apt/lists/* /root/.cache/pip

# The README's test command (runs `make setup` first: namespace probe, Open vSwitch start).
CMD ["make", "test"]
