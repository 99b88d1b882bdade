"""strata's compiled-extension recipe: the app calls its C extension."""
import getpass
import os

import fastsum
import six


def main() -> None:
    print(
        f"hello from a C extension: total {fastsum.total(range(101))}, six {six.__version__}, "
        f"running as {getpass.getuser()}, HOME={os.environ.get('HOME')}"
    )


if __name__ == "__main__":
    main()
