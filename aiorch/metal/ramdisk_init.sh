#!/bin/sh
# The aiorch ramdisk's init (PID 1, busybox sh): bring up the boot NIC, post the inventory
# to the hub, then do what the hub answers until it says poweroff or reboot. The JSON it
# sends is defined by aiorch/metal/contract.py. Kernel command line:
#   aiorch.hub=https://HOST:PORT aiorch.token=TOKEN aiorch.mac=aa:bb:cc:dd:ee:ff
# The token goes into a curl config file, never onto a command line or the console.
# Sourced with AIORCH_RAMDISK_SOURCED=1 it only defines its functions (the tests run the
# inventory on the test machine that way).

W=${W:-/run/aiorch}
# Where the inventory reads the machine (tests point these at a made-up tree).
SYS=${SYS:-/sys} PROC=${PROC:-/proc}

log() { # with the seconds since boot, so the console shows each phase's timing
	read -r up _ </proc/uptime
	echo "aiorch-ramdisk [$up]: $*"
}

power_off() {
	log "powering off: $*"
	sync
	poweroff -f
	sleep 3600
}

boot() {
	export PATH=/usr/sbin:/usr/bin:/sbin:/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
	/bin/busybox --install -s /bin
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	mount -t tmpfs -o mode=0700 tmpfs /run
	mount -t tmpfs tmpfs /tmp
	exec </dev/console >/dev/console 2>&1
	mkdir -p $W
}

# The hub, the boot NIC and the token from the kernel command line; the token goes
# straight into curl's config file.
read_cmdline() {
	hub= mac= token=
	for word in $(cat /proc/cmdline); do
		case $word in
		aiorch.hub=*) hub=${word#aiorch.hub=} ;;
		aiorch.mac=*) mac=$(echo "${word#aiorch.mac=}" | tr 'A-F-' 'a-f:') ;;
		aiorch.token=*) token=${word#aiorch.token=} ;;
		esac
	done
	[ -n "$hub" ] && [ -n "$mac" ] && [ -n "$token" ] ||
		power_off "the kernel command line lacks aiorch.hub, aiorch.mac or aiorch.token"
	[ -s /etc/aiorch/ca.pem ] || power_off "no /etc/aiorch/ca.pem: boot with the hub's CA initrd too"
	(umask 077 && printf 'header = "Authorization: Bearer %s"\n' "$token" >$W/curl.conf)
	unset token
	log "hub $hub, boot NIC $mac"
}

# ---- network -------------------------------------------------------------------------------

network() {
	modprobe -qa $(cat /etc/aiorch/modules)
	nic=
	for _ in $(seq 1 100); do
		for dev in $SYS/class/net/*; do
			[ "$(cat "$dev/address" 2>/dev/null)" = "$mac" ] && nic=${dev##*/}
		done
		[ -n "$nic" ] && break
		sleep 0.1
	done
	[ -n "$nic" ] || power_off "no NIC has MAC $mac"
	cat >$W/udhcpc.sh <<'EOF'
#!/bin/sh
case $1 in
bound | renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	for r in $router; do ip route add default via "$r" dev "$interface" && break; done
	;;
esac
exit 0
EOF
	chmod 755 $W/udhcpc.sh
	ip link set lo up
	ip link set "$nic" up
	delay=1
	until udhcpc -q -f -n -i "$nic" -s $W/udhcpc.sh -t 5 -T 2 >$W/udhcpc.log 2>&1; do
		log "no DHCP lease on $nic yet; retrying in ${delay}s"
		sleep $delay
		[ $delay -lt 30 ] && delay=$((delay * 2))
	done
	log "$nic is $(ip -4 -o addr show dev "$nic" | awk '{print $4}')"
}

# ---- talking to the hub --------------------------------------------------------------------

# send PATH FILE: POST FILE to the hub until it answers 2xx (the answer lands in $W/answer).
# Network errors, 429 and 5xx are retried with backoff for ever; 401/403 (and any other 4xx,
# which a retry cannot mend) print the hub's reason and power off.
send() {
	delay=1
	while :; do
		code=$(curl -sS -K $W/curl.conf --cacert /etc/aiorch/ca.pem \
			-H 'Content-Type: application/json' --data-binary @"$2" \
			--connect-timeout 10 --max-time 300 -o $W/answer -w '%{http_code}' \
			"$hub/api/v1/ramdisk/$1" 2>$W/curl.err)
		case $code in
		2??) return 0 ;;
		429 | 5?? | 000 | "") why="$(head -c 300 $W/curl.err) (HTTP ${code:-none})" ;;
		*)
			power_off "the hub refused /ramdisk/$1 (HTTP $code):" \
				"$(jq -r '.detail // .' $W/answer 2>/dev/null | head -c 500)"
			;;
		esac
		log "hub unreachable for /ramdisk/$1: $why; retrying in ${delay}s"
		sleep $delay
		[ $delay -lt 60 ] && delay=$((delay * 2))
	done
}

param() { jq -r ".params.$1 // empty" $W/answer; }

# ---- inventory -----------------------------------------------------------------------------

read1() { cat "$1" 2>/dev/null | head -n 1 | tr -d '\000\t'; }

disks() {
	for dev in $SYS/block/*; do
		[ -e "$dev/device" ] || continue
		case ${dev##*/} in loop* | ram* | zram* | sr* | fd*) continue ;; esac
		echo "${dev##*/}"
	done
}

disk_serial() {
	s=$(read1 "$SYS/block/$1/serial")
	[ -n "$s" ] || s=$(read1 "$SYS/block/$1/device/serial")
	[ -n "$s" ] || s=$(tail -c +5 "$SYS/block/$1/device/vpd_pg80" 2>/dev/null | tr -cd '[:print:]')
	# libata disks may have no serial page in sysfs: ask the disk (IDENTIFY, through smartctl)
	[ -n "$s" ] || s=$(smartctl -i /dev/$1 2>/dev/null | sed -n 's/^Serial [Nn]umber:[[:space:]]*//p')
	echo "$s" | sed 's/^ *//; s/ *$//'
}

# One tab-separated line per disk, NIC and PCI device, turned into JSON by a single jq: each
# jq start costs a noticeable fraction of a second on an emulated CPU. A link address that is
# no Ethernet MAC (InfiniBand's 20 bytes) is left out: the contract's NICs have MACs.
inventory() {
	for d in $(disks); do
		printf '%s\t%s\t%s\t%s\t%s\n' "$d" "$(read1 $SYS/block/$d/size)" "$(disk_serial $d)" \
			"$(read1 $SYS/block/$d/device/model)" "$(read1 $SYS/block/$d/queue/rotational)"
	done >$W/disks.tsv
	for dev in $SYS/class/net/*; do
		[ "${dev##*/}" = lo ] || printf '%s\t%s\n' "${dev##*/}" "$(read1 $dev/address)"
	done >$W/nics.tsv
	for dev in $SYS/bus/pci/devices/*; do
		printf '%s\t%s\t%s\t%s\n' "${dev##*/}" "$(read1 $dev/vendor)" "$(read1 $dev/device)" \
			"$(read1 $dev/class)"
	done >$W/pci.tsv
	id=$SYS/class/dmi/id
	jq -n --arg boot_mac "$mac" --arg manufacturer "$(read1 $id/sys_vendor)" \
		--arg product "$(read1 $id/product_name)" --arg serial "$(read1 $id/product_serial)" \
		--arg uuid "$(read1 $id/product_uuid)" --argjson cpus "$(grep -c ^processor $PROC/cpuinfo)" \
		--arg cpu_model "$(sed -n 's/^model name[[:space:]]*: //p' $PROC/cpuinfo | head -n 1)" \
		--argjson kib "$(awk '/^MemTotal:/ {print $2}' $PROC/meminfo)" \
		--rawfile disks $W/disks.tsv --rawfile nics $W/nics.tsv --rawfile pci $W/pci.tsv \
		'def rows($text): $text | split("\n") | map(select(. != "") | split("\t"));
		 def trim: gsub("^ +| +$"; "");
		 {boot_mac: $boot_mac, cpus: $cpus, cpu_model: $cpu_model, memory_bytes: ($kib * 1024),
		  system: {manufacturer: $manufacturer, product: $product, serial: $serial, uuid: $uuid},
		  disks: [rows($disks)[] | {name: .[0], size_bytes: (.[1] | tonumber * 512),
		          serial: (.[2] | trim), model: (.[3] | trim), rotational: (.[4] == "1")}
		          | with_entries(select(.value != ""))],
		  nics: [rows($nics)[] | select(.[1] | test("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"))
		         | {name: .[0], mac: .[1]}],
		  pci: [rows($pci)[] | {address: .[0], vendor: .[1], device: .[2], class: .[3]}]}'
}

# ---- actions: each writes its ActionResult to $W/result.json -------------------------------

result() { # KIND OK DETAIL [jq args and a filter that adds to the result]
	kind=$1 ok=$2 detail=$3
	shift 3
	jq -n --arg kind "$kind" --argjson ok "$ok" --arg detail "$detail" "$@" >$W/result.json
}

fio_mib_s() { # DISK rw|read MIB SECONDS -> MiB/s, or nothing when fio failed
	fio --name=burn-in --filename=/dev/$1 --rw=$2 --bs=1M --size=${3}M --runtime=$4 \
		--direct=1 --ioengine=psync --output-format=json >$W/fio.json 2>>$W/fio.err &&
		jq '[.jobs[] | (.write.bw_bytes + .read.bw_bytes)] | add / 1048576 | . * 100 | round / 100' \
			$W/fio.json
}

smart() {
	out=$(smartctl -H /dev/$1 2>&1)
	rc=$?
	case $out in
	*PASSED* | *"Health Status: OK"*) echo PASSED ;;
	*FAILED*) echo FAILED ;;
	*) [ $((rc & 8)) -ne 0 ] && echo FAILED || echo unsupported ;;
	esac
}

# Burn-in writes to every disk (fio on the raw device, as MAAS's storage tests do): it runs
# at intake, before anything of the site's is on them.
burn_in() {
	cpu_s=$(param cpu_seconds) disk_s=$(param disk_seconds) size=$(param disk_size_mib)
	log "burn-in: stress-ng ${cpu_s}s, fio ${disk_s}s and ${size} MiB per disk, smartctl -H"
	problems=
	stress-ng --cpu 0 --timeout "${cpu_s}s" --metrics-brief -Y $W/stress.yaml >$W/stress.log 2>&1 ||
		problems="stress-ng failed: $(tail -n 2 $W/stress.log | tr '\n' ' ')"
	bogo=$(awk '/bogo-ops-per-second-real-time:/ {s += $2} END {if (NR) print s}' $W/stress.yaml)
	echo '{}' >$W/measured.json
	for d in $(disks); do
		mib=$(($(read1 $SYS/block/$d/size) / 2048))
		[ "$size" -lt "$mib" ] && mib=$size
		w=$(fio_mib_s $d write $mib $disk_s) || problems="$problems fio write $d failed;"
		r=$(fio_mib_s $d read $mib $disk_s) || problems="$problems fio read $d failed;"
		jq --arg d "$d" --arg w "$w" --arg r "$r" --arg s "$(smart $d)" \
			'.disk_write_mib_s[$d] = ($w | tonumber? // null) |
			 .disk_read_mib_s[$d] = ($r | tonumber? // null) | .smart[$d] = $s' \
			$W/measured.json >$W/m.json && mv $W/m.json $W/measured.json
	done
	ok=true
	[ -n "$problems" ] && ok=false
	result burn_in $ok "$problems" --arg bogo "$bogo" --slurpfile m $W/measured.json \
		'{kind: $kind, ok: $ok, detail: $detail,
		  measured: ($m[0] + {cpu_bogo_ops_per_s: ($bogo | tonumber? // null)})}'
}

zero() { # DISK SECTOR: zero 1 MiB from SECTOR, then check that it reads back as zeros
	dd if=/dev/zero of=/dev/$1 bs=512 seek=$2 count=2048 conv=fsync 2>/dev/null &&
		blockdev --flushbufs /dev/$1 &&
		[ "$(dd if=/dev/$1 bs=512 skip=$2 count=2048 2>/dev/null | tr -d '\000' | wc -c)" = 0 ]
}

wipe_metadata() { # DISK -> "ok detail"; nothing else on stdout (wipefs, even with -q,
	# prints "calling ioctl to re-read partition table" there after erasing a table)
	for part in $SYS/block/$1/$1*; do
		[ -e "$part/partition" ] && wipefs -qa /dev/${part##*/} >/dev/null
	done
	wipefs -qa /dev/$1 >/dev/null || { echo "false wipefs failed"; return; }
	sectors=$(read1 $SYS/block/$1/size)
	last=$((sectors - 2048))
	[ $last -lt 0 ] && last=0
	if zero $1 0 && zero $1 $last; then
		echo "true signatures removed; first and last MiB zeroed and read back as zeros"
	else
		echo "false zeroing the first or last MiB failed"
	fi
}

wipe_secure() { # DISK -> "ok method detail"
	case $1 in
	nvme*)
		if out=$(nvme format /dev/$1 --ses=1 --force 2>&1); then
			echo "true nvme-format-ses1 $out"
		else
			echo "false nvme-format-ses1 $out"
		fi
		;;
	sd*)
		# ATA security erase needs a user password set first; a failed erase takes it off
		# again, so the disk is never left locked.
		info=$(hdparm -I /dev/$1 2>/dev/null)
		if ! echo "$info" | grep -q '^[[:space:]]*supported$' ||
			! echo "$info" | grep -q 'not[[:space:]]*frozen'; then
			echo "false ata-security-erase not supported or frozen"
		elif ! hdparm --user-master u --security-set-pass aiorch /dev/$1 >/dev/null 2>&1; then
			echo "false ata-security-erase could not set the erase password"
		elif out=$(hdparm --user-master u --security-erase aiorch /dev/$1 2>&1); then
			echo "true ata-security-erase done"
		else
			hdparm --user-master u --security-disable aiorch /dev/$1 >/dev/null 2>&1
			echo "false ata-security-erase refused: $out"
		fi
		;;
	*) echo "false none no secure erase for this kind of disk (${1%%[0-9]*})" ;;
	esac
}

wipe() {
	method=$(param method)
	log "wipe ($method) of $(disks | tr '\n' ' ')"
	for d in $(disks); do
		if [ "$method" = secure ]; then
			set -- $(wipe_secure $d)
			ok=$1 how=$2
			shift 2
		else
			set -- $(wipe_metadata $d)
			ok=$1 how=metadata
			shift
		fi
		case $ok in true | false) ;; *) set -- "unexpected outcome: $ok${*:+ $*}"; ok=false ;; esac
		jq -n --arg name "$d" --arg serial "$(disk_serial $d)" --arg method "$how" \
			--argjson ok "$ok" --arg detail "$*" \
			'{name: $name, serial: (if $serial == "" then null else $serial end),
			  method: $method, ok: $ok, detail: $detail}'
	done | jq -s . >$W/disks.json
	# Every disk has an outcome, and each says ok (a disk whose outcome went missing fails it).
	all=$(jq --argjson n "$(disks | wc -l)" 'length == $n and all(.ok)' $W/disks.json)
	result wipe "$all" "$method wipe of $(jq length $W/disks.json) disk(s)" \
		--slurpfile disks $W/disks.json \
		'{kind: $kind, ok: $ok, detail: $detail, disks: $disks[0]}'
}

part_name() { # DISK N -> the kernel's name of partition N: vda1, sda1, nvme0n1p1
	case $1 in
	*[0-9]) echo "${1}p$2" ;;
	*) echo "$1$2" ;;
	esac
}

# stream_image URL DISK: the image, gunzip'd onto DISK while sha256sum reads the gzip stream
# through a fifo (one pass, no copy in RAM); the stream's sha256 lands in $W/image.sum.
stream_image() {
	rm -f $W/image.fifo $W/image.sum
	mkfifo $W/image.fifo
	sha256sum <$W/image.fifo >$W/image.sum &
	summer=$!
	(
		set -o pipefail
		curl -sS -f -K $W/curl.conf --cacert /etc/aiorch/ca.pem --connect-timeout 10 "$1" \
			2>$W/curl.err | tee $W/image.fifo | gunzip -c 2>$W/gunzip.err |
			dd of=/dev/$2 bs=1M iflag=fullblock conv=fsync 2>$W/dd.err
	)
	rc=$?
	wait $summer
	return $rc
}

write_seed() { # PATH MODE CONTENT, under $W/root: directories it makes are root's alone
	(umask 077 && mkdir -p "$W/root${1%/*}" && printf '%s' "$3" >"$W/root$1") &&
		chmod "$2" "$W/root$1"
}

# Every seed file of the deploy action in $W/answer onto the root mounted at $W/root. jq
# quotes each value for the shell (@sh), so no content is ever run.
write_seeds() {
	seeds=$(jq -r '.params.seed[] | @sh "write_seed \(.path) \(.mode) \(.content)"' $W/answer) &&
		eval "$seeds"
}

# Write the image onto the root disk (three tries of the whole stream: a retry inside one
# would splice two streams), check the stream's sha256, then write the first-boot seed onto
# its root partition. A disk whose image did not check out has its first MiB zeroed, so
# that it never boots half an image.
deploy() {
	url=$(param image_url) want=$(param sha256) disk=$(param root_disk)
	part=$(part_name "$disk" "$(param root_partition)")
	fail() { result deploy false "$*" '{kind: $kind, ok: $ok, detail: $detail}'; }
	[ -b "/dev/$disk" ] || { fail "no disk $disk on this machine"; return; }
	read -r t0 _ </proc/uptime
	for try in 1 2 3; do
		log "deploy: streaming the image onto $disk (try $try)"
		stream_image "$url" "$disk" && [ "$(cut -d' ' -f1 $W/image.sum)" = "$want" ] && break
		why="$(head -c 200 $W/curl.err) $(head -c 200 $W/gunzip.err) $(tail -n 1 $W/dd.err)"
		[ "$(cut -d' ' -f1 $W/image.sum)" = "$want" ] ||
			why="$why; the stream's sha256 is $(cut -d' ' -f1 $W/image.sum), not $want"
		log "deploy: the image did not write: $why"
		dd if=/dev/zero of=/dev/$disk bs=1M count=1 conv=fsync 2>/dev/null
		[ $try = 3 ] && { fail "image not written after 3 tries: $why"; return; }
		sleep $((try * 5))
	done
	# Whole MiB records (fullblock): the image's size, unless it ended in a partial one.
	bytes=$(sed -n 's/^\([0-9]*\)+0 records out$/\1/p' $W/dd.err)
	[ -n "$bytes" ] && bytes=$((bytes * 1048576))
	# A GPT image on a larger disk has its backup table where the image ended: move it to
	# the disk's end, where the firmware and the kernel look (an MBR image has none to move).
	sfdisk --relocate gpt-bak-std /dev/$disk 2>/dev/null
	blockdev --rereadpt /dev/$disk
	for _ in $(seq 1 100); do [ -b "/dev/$part" ] && break; sleep 0.1; done
	mkdir -p $W/root
	mount -t ext4 "/dev/$part" $W/root 2>$W/mount.err ||
		{ fail "cannot mount $part of the new image: $(head -c 300 $W/mount.err)"; return; }
	if ! write_seeds; then
		umount $W/root
		fail "could not write the seed onto $part"
		return
	fi
	n=$(jq '.params.seed | length' $W/answer)
	sync
	umount $W/root
	read -r t1 _ </proc/uptime
	result deploy true "wrote ${bytes:-?} bytes to $disk (sha256 of the stream checked) and $n seed files to $part" \
		--argjson bytes "${bytes:-null}" --arg sha "$want" --arg s "$t0 $t1" \
		'{kind: $kind, ok: $ok, detail: $detail, measured: {bytes_written: $bytes, sha256: $sha,
		  seconds: ($s | split(" ") | map(tonumber) | .[1] - .[0] | round)}}'
}

# ---- the loop ------------------------------------------------------------------------------

main() {
	boot
	read_cmdline
	network
	inventory >$W/inventory.json || power_off "could not collect the inventory"
	log "inventory: $(jq -c '{cpus, memory_bytes, disks: [.disks[].name], nics: [.nics[].mac]}' \
		$W/inventory.json)"
	send inventory $W/inventory.json
	while :; do
		kind=$(jq -r .kind $W/answer)
		log "action: $kind"
		case $kind in
		burn_in) burn_in ;;
		wipe) wipe ;;
		wait)
			sleep "$(param seconds)"
			result wait true "" '{kind: $kind, ok: $ok, detail: $detail}'
			;;
		deploy) deploy ;;
		poweroff) power_off "the hub says so" ;;
		reboot)
			sync
			reboot -f
			;;
		*) power_off "unknown action $kind" ;;
		esac
		log "result: $(jq -c '{kind, ok, detail}' $W/result.json)"
		send result $W/result.json
	done
}

[ "${AIORCH_RAMDISK_SOURCED:-}" = 1 ] || main
