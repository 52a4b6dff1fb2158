# Sourced by the coordinator's and the site's entrypoints, after each defines say().
fail() {
  say "error: $*"
  exit 2
}

# A file the processes need: present, a file (Docker mounts an empty folder when a bind-mounted file
# is missing on the host) and readable by this user.
need_file() { # PATH WHAT
  if [ ! -e "$1" ]; then
    fail "$2 $1 does not exist; mount it (see docs/deployment.md)"
  elif [ -d "$1" ]; then
    fail "$2 $1 is a folder, not a file: the file was missing on the host when the container started"
  elif [ ! -r "$1" ]; then
    fail "$2 $1 is not readable by uid $(id -u) (owner uid $(stat -c %u "$1"), mode $(stat -c %a "$1")); make it owned by uid $(id -u), or rebuild the images with FEDWARD_UID=$(stat -c %u "$1")"
  fi
}
