# images.sh: building container images FROM scratch with world/mkimage
# (see internal/ociimage) as docker-archive tarballs that both `docker load`
# and `ctr -n k8s.io images import` accept, each rebuilt only when its
# content changed. Sourced by world/images.sh and demo/images.sh, never run.
#
# Before sourcing, set root (the repository) and out (where the tarballs
# go); then call images_setup once and image once per image.

images_work=$GEFYRA_CACHE/images-work
mkimage=$images_work/bin/mkimage

images_log() { printf '[images] %s\n' "$*" >&2; }

# images_setup builds mkimage (go build is incremental) and makes $out.
images_setup() {
	mkdir -p "$out" "$images_work/bin"
	(cd "$root" && go build -o "$mkimage" ./world/mkimage)
}

# content_key prints a hash over the image arguments and the contents,
# modes and names of every file they add.
content_key() {
	{
		for a in "$@"; do
			case $a in
			-add) ;;
			*:/*)
				src=${a%%:/*}
				if [ -d "$src" ]; then
					printf 'tree %s\n' "$a"
					(cd "$src" && find . -printf '%P %y %m %l\n' | LC_ALL=C sort &&
						find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
				elif [ -f "$src" ]; then
					printf 'file %s %s\n' "$a" "$(sha256sum <"$src" | cut -d' ' -f1)"
				else
					printf 'arg %s\n' "$a"
				fi
				;;
			*) printf 'arg %s\n' "$a" ;;
			esac
		done
		sha256sum <"$mkimage"
	} | sha256sum | cut -d' ' -f1
}

# image FILE TAG ARGS...: builds TAG into $out/FILE with mkimage ARGS unless
# its key matches.
image() {
	local file=$1 tag=$2; shift 2
	local key
	key=$(content_key "$tag" "$@")
	if [ -f "$out/$file" ] && [ "$(cat "$out/$file.key" 2>/dev/null)" = "$key" ]; then
		images_log "$tag is up to date ($out/$file)"
		return
	fi
	images_log "building $tag"
	"$mkimage" -o "$out/$file" -tag "$tag" "$@" >/dev/null
	echo "$key" >"$out/$file.key"
	images_log "built $tag ($out/$file, $(du -h "$out/$file" | cut -f1))"
}
