"""The Debian packages the provisioning roles install: the one list the repo build reads.

Keep it in step with the roles under ``playbooks/roles``: a package a role
installs but the site repository lacks fails on an air-gapped host.
"""

# aiorch_base, aiorch_storage, aiorch_network, aiorch_container_runtime, aiorch_edge_agent,
# aiorch_slurm.
BASE_PACKAGES: tuple[str, ...] = (
    "aardvark-dns",  # container_runtime: DNS on podman networks
    "catatonit",  # container_runtime: `podman run --init`
    "chrony",  # base: time from the site's NTP server
    "crun",  # container_runtime: the OCI runtime
    "e2fsprogs",  # storage: mkfs.ext4
    "efibootmgr",  # edge_agent: the no-BMC power driver's next boot (UEFI machines)
    "iproute2",  # network: ip -j for checks
    "iptables",  # container_runtime: netavark programs the firewall with it
    "netavark",  # container_runtime: podman's network backend
    "munge",  # slurm: the credentials slurmctld and slurmd trust each other by
    "nfs-common",  # storage: NFS mounts
    "podman",  # container_runtime
    "python3-pip",  # site_repo: pip for the wheel directory
    "python3-pkg-resources",  # edge_agent, nvidia_driver: Ansible's pip module parses with it
    "python3-pyroute2",  # network: verify the live links through netlink
    "python3-venv",  # edge_agent, nvidia_driver: venvs for the agent and the NVML gate
    "slurm-client",  # slurm: srun, sbatch, scontrol (slurm-wlm pulls it in too)
    "slurm-wlm",  # slurm: slurmctld and slurmd, Debian's 22.05
    "slurm-wlm-jwt-plugin",  # slurm: auth/jwt, for slurmrestd's tokens (no package pulls it in)
    "slurmctld",  # slurm: the controller daemon
    "slurmd",  # slurm: the node daemon
    "slurmrestd",  # slurm: the REST API the hub reaches through SSH
    "sudo",  # base
    "util-linux",  # storage: mount, findmnt, blkid, wipefs
    "xfsprogs",  # storage: mkfs.xfs
)

# aiorch_nvidia_driver, with `aiorch repo build --gpu`: Debian's driver is in non-free (bookworm:
# the 535 branch, built by DKMS against linux-headers). Fabric manager and the container toolkit
# are NVIDIA's: add their apt repository with --source and the packages with --package
# (nvidia-fabricmanager-535, nvidia-container-toolkit).
GPU_PACKAGES: tuple[str, ...] = (
    "firmware-misc-nonfree",
    "linux-headers-amd64",
    "nvidia-driver",
    "nvidia-persistenced",
    "nvidia-smi",
)

# The aiorch ramdisk (aiorch.metal.ramdisk builds it from these debs): a Debian kernel, busybox
# for the shell and DHCP, and the tools of inventory, burn-in and wipe. Kept small: every MiB
# of the initrd costs boot time on a slow console or an emulated machine. The kernel is
# amd64-only for now (`name:arch` is planned for that architecture alone).
RAMDISK_PACKAGES: tuple[str, ...] = (
    "busybox-static",  # sh, mount, ip, udhcpc, poweroff: the userland
    "curl",  # the hub's HTTPS API, verified against the pinned CA
    "fdisk",  # deploy: sfdisk moves the image's backup GPT to the disk's end
    "fio",  # burn-in: disk write and read throughput
    "hdparm",  # wipe --secure: ATA security erase
    "jq",  # inventory and results as JSON
    "kmod",  # modprobe for the compressed modules
    "linux-image-amd64:amd64",  # the kernel and its modules
    "nvme-cli",  # wipe --secure: NVMe format with secure erase
    "smartmontools",  # burn-in: smartctl -H per disk
    "stress-ng",  # burn-in: CPU bogo ops
    "util-linux",  # wipefs, lsblk
)

# Every Priority: required package, the base mmdebstrap's `required` variant installs. The
# Essential ones are in no package's Depends, so a closure lacks them unless asked for; an apt
# pattern follows whatever Debian marks required, where a list kept by hand would drift.
REQUIRED_PATTERN = "?priority(required)"

# The deployed OS's root image (aiorch.metal.image builds it with mmdebstrap from the site
# repository alone): what boots it from a BIOS disk, brings up its network and lets the hub
# provision it. Kept small: every MiB goes into every bundle (the debs) and every deploy.
IMAGE_PACKAGES: tuple[str, ...] = (
    REQUIRED_PATTERN,  # the base system (above)
    "apt",  # site.yml's roles install from the site repository (Priority: important, not required)
    "ca-certificates",  # pip and the agent verify TLS (the hub's own CA is pinned on top)
    "dbus",  # systemd's hostnamectl, timedatectl and logind, which Ansible's modules call
    "e2fsprogs",  # fsck.ext4 for the root at boot
    "efibootmgr",  # the agent's no-BMC power driver sets the next boot with it (UEFI)
    "grub-efi-amd64-bin:amd64",  # grub for UEFI, on the ESP at the removable path (x86 only)
    "grub-pc:amd64",  # the BIOS boot loader grub-install writes to the disk (x86 only)
    "initramfs-tools",  # the initrd that finds the root by UUID
    "iproute2",  # network: ip
    "linux-image-amd64:amd64",  # the kernel
    "netbase",  # /etc/services and /etc/protocols
    "openssh-server",  # site.yml reaches the machine over SSH
    "procps",  # ps, free, pkill
    "python3",  # Ansible's modules and the agent
    "python3-apt",  # Ansible's apt module
    "python3-pkg-resources",  # the edge agent role installs it with the venv support: present
    "python3-venv",  # the agent's venv (/opt/aiorch-agent)
    "sudo",  # base
    "systemd-resolved",  # DNS from the DHCP lease (networkd hands it over)
    "systemd-sysv",  # systemd as /sbin/init
    "udev",  # device nodes and NIC names: networkd configures nothing without it
)

# What `aiorch repo build` and `aiorch bundle create` put into every site repository: the
# roles' packages, the ramdisk's and the root image's.
SITE_PACKAGES: tuple[str, ...] = (*BASE_PACKAGES, *RAMDISK_PACKAGES, *IMAGE_PACKAGES)
