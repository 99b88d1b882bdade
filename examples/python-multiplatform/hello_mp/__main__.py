import getpass
import platform

import numpy
import six


def main() -> None:
    total = int(numpy.arange(101).sum())
    print(
        f"hello from {platform.machine()}: Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, six {six.__version__}, total {total}, "
        f"running as {getpass.getuser()}"
    )


if __name__ == "__main__":
    main()
