#!/bin/sh
# The image's entrypoint: runs `bnn ARGS` as the owner of the folder the results go to, so that
# the files it writes into a mounted folder belong to whoever owns that folder on the host.
#
# Started as root (docker's default), it takes the owner of ./runs (the documented mount,
# /home/bnn/runs), or of the working directory when there is no ./runs, and switches to that
# uid:gid with setpriv; a folder that root owns keeps root. Started as another user
# (`docker run -u "$(id -u):$(id -g)"`), it runs bnn as that user. BNN_RUN_AS=uid:gid overrides
# the choice; BNN_RUN_AS=0:0 keeps root.
set -eu
if [ "$(id -u)" = 0 ]; then
  if [ -n "${BNN_RUN_AS:-}" ]; then
    ids=$BNN_RUN_AS
  else
    dir=runs
    [ -d "$dir" ] || dir=.
    ids=$(stat -c %u:%g "$dir")
  fi
  case $ids in
    0:*|0) ;;
    *:*)
      # Fails only where the container lacks CAP_SETUID/CAP_SETGID (--cap-drop): then stay root.
      if setpriv --reuid="${ids%%:*}" --regid="${ids#*:}" --clear-groups -- true 2>/dev/null; then
        exec setpriv --reuid="${ids%%:*}" --regid="${ids#*:}" --clear-groups -- bnn "$@"
      fi
      echo "bnn-entrypoint: cannot switch to uid:gid $ids (capabilities dropped?); running as root" >&2 ;;
    *) echo "bnn-entrypoint: BNN_RUN_AS must be uid:gid, not '$ids'" >&2; exit 2 ;;
  esac
fi
exec bnn "$@"
