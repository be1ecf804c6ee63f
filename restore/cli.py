"""The `restore` command line (placeholder until the CLI module lands)."""


def main():  # pragma: no cover
    print("restore")
