"""How a script fails: a user's mistake or a refused write is one line and exit status 2.

Scripts and the library raise ``UserError`` for mistakes the user can fix (bad data, a bad
option). ``run_script`` prints it without a traceback. A write the system refuses (a full or
read-only disk, permissions) goes through ``write_failure``, the one place that words it.
"""
import errno
import sys

# Errors of writing that the user fixes (permissions, a read-only or full disk), not the code
WRITE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
FULL_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class UserError(Exception):
    """A problem with the user's input or options: reported as a message, never a traceback."""


def write_failure(error, where=None, intact="every file is written under a temporary name, "
                                            "then renamed", then="run again"):
    """The UserError for an OSError of writing, or None when `error` is not one the user fixes.

    `where` names the folder or file (default: the error's file name), `intact` says why the
    files written before are whole, `then` what to do once space or permissions are fixed.
    """
    if getattr(error, "errno", None) not in WRITE_ERRNOS:
        return None
    if error.errno in FULL_DISK_ERRNOS and where:
        return UserError(f"no space left on the device while writing to {where}. Files "
                         f"written before are intact ({intact}); free space, then {then}")
    return UserError(f"cannot write {where or error.filename or 'a file'}: {error.strerror}. "
                     f"Files written before are intact ({intact}); free space or fix the "
                     f"permissions, then {then}")


def run_script(main):
    """Run a script's main(); a UserError, or a write the system refused, becomes a one-line
    message and exit status 2."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:  # output piped into a command that stopped reading (| head)
        sys.stdout = None
        raise SystemExit(0) from None
    except OSError as error:
        failure = write_failure(error)
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as error:
        print(f"\ninterrupted: {error}" if str(error) else "\ninterrupted.", file=sys.stderr)
        raise SystemExit(130) from None
