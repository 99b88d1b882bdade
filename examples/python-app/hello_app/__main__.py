import getpass
import platform

import six


def main() -> None:
    print(
        f"hello from strata: Python {platform.python_version()}, "
        f"six {six.__version__}, running as {getpass.getuser()}"
    )


if __name__ == "__main__":
    main()
