#!/bin/sh
# The aiorch ramdisk's init (PID 1, busybox sh): bring up the boot NIC, post the inventory
# to the hub, then do what the hub answers until it says poweroff or reboot. The JSON it
# sends is defined by aiorch/metal/contract.py. Kernel command line:
#   aiorch.hub=https://HOST:PORT aiorch.token=TOKEN aiorch.mac=aa:bb:cc:dd:ee:ff
# The token goes into a curl config file, never onto a command line or the console.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0700 tmpfs /run
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
W=/run/aiorch
mkdir -p $W

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

# ---- network -------------------------------------------------------------------------------

modprobe -qa $(cat /etc/aiorch/modules)
nic=
for _ in $(seq 1 100); do
	for dev in /sys/class/net/*; do
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

read1() { cat "$1" 2>/dev/null | head -n 1 | tr -d '\000'; }

disks() {
	for dev in /sys/block/*; do
		[ -e "$dev/device" ] || continue
		case ${dev##*/} in loop* | ram* | zram* | sr* | fd*) continue ;; esac
		echo "${dev##*/}"
	done
}

disk_serial() {
	s=$(read1 "/sys/block/$1/serial")
	[ -n "$s" ] || s=$(read1 "/sys/block/$1/device/serial")
	[ -n "$s" ] || s=$(tail -c +5 "/sys/block/$1/device/vpd_pg80" 2>/dev/null | tr -cd '[:print:]')
	echo "$s" | sed 's/^ *//; s/ *$//'
}

inventory() {
	for d in $(disks); do
		jq -n --arg name "$d" --argjson sectors "$(read1 /sys/block/$d/size)" \
			--arg serial "$(disk_serial $d)" --arg model "$(read1 /sys/block/$d/device/model)" \
			--arg rot "$(read1 /sys/block/$d/queue/rotational)" \
			'{name: $name, size_bytes: ($sectors * 512), serial: $serial,
			  model: ($model | gsub("^ +| +$"; "")), rotational: ($rot == "1")}
			 | with_entries(select(.value != ""))'
	done | jq -s . >$W/disks.json
	for dev in /sys/class/net/*; do
		[ "${dev##*/}" = lo ] && continue
		jq -n --arg name "${dev##*/}" --arg mac "$(read1 $dev/address)" '{name: $name, mac: $mac}'
	done | jq -s . >$W/nics.json
	for dev in /sys/bus/pci/devices/*; do
		jq -n --arg address "${dev##*/}" --arg vendor "$(read1 $dev/vendor)" \
			--arg device "$(read1 $dev/device)" --arg class "$(read1 $dev/class)" \
			'{address: $address, vendor: $vendor, device: $device, class: $class}'
	done | jq -s . >$W/pci.json
	id=/sys/class/dmi/id
	jq -n --arg boot_mac "$mac" --arg manufacturer "$(read1 $id/sys_vendor)" \
		--arg product "$(read1 $id/product_name)" --arg serial "$(read1 $id/product_serial)" \
		--arg uuid "$(read1 $id/product_uuid)" --argjson cpus "$(grep -c ^processor /proc/cpuinfo)" \
		--arg cpu_model "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" \
		--argjson kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)" \
		--slurpfile disks $W/disks.json --slurpfile nics $W/nics.json --slurpfile pci $W/pci.json \
		'{boot_mac: $boot_mac, cpus: $cpus, cpu_model: $cpu_model, memory_bytes: ($kib * 1024),
		  system: {manufacturer: $manufacturer, product: $product, serial: $serial, uuid: $uuid},
		  disks: $disks[0], nics: $nics[0], pci: $pci[0]}'
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

burn_in() {
	cpu_s=$(param cpu_seconds) disk_s=$(param disk_seconds) size=$(param disk_size_mib)
	log "burn-in: stress-ng ${cpu_s}s, fio ${disk_s}s and ${size} MiB per disk, smartctl -H"
	problems=
	stress-ng --cpu 0 --timeout "${cpu_s}s" --metrics-brief -Y $W/stress.yaml >$W/stress.log 2>&1 ||
		problems="stress-ng failed: $(tail -n 2 $W/stress.log | tr '\n' ' ')"
	bogo=$(awk '/bogo-ops-per-second-real-time:/ {s += $2} END {if (NR) print s}' $W/stress.yaml)
	echo '{}' >$W/measured.json
	for d in $(disks); do
		mib=$(($(read1 /sys/block/$d/size) / 2048))
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

wipe_metadata() { # DISK -> "ok detail"
	for part in /sys/block/$1/$1*; do [ -e "$part/partition" ] && wipefs -qa /dev/${part##*/}; done
	wipefs -qa /dev/$1 || { echo "false wipefs failed"; return; }
	sectors=$(read1 /sys/block/$1/size)
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
		if hdparm -I /dev/$1 2>/dev/null | grep -q 'not[[:space:]]*frozen' &&
			hdparm --user-master u --security-set-pass aiorch /dev/$1 >/dev/null 2>&1 &&
			out=$(hdparm --user-master u --security-erase aiorch /dev/$1 2>&1); then
			echo "true ata-security-erase done"
		else
			echo "false ata-security-erase not supported, frozen or refused"
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

# ---- the loop ------------------------------------------------------------------------------

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
	deploy) result deploy false "deploy not built yet" '{kind: $kind, ok: $ok, detail: $detail}' ;;
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
