"""`clusterbench separability dataset=NAME [overrides]` (conf/separability.yaml)."""

from clusterbench.core.cli import command

main = command("separability", "clusterbench.producers.separability.run:run")

if __name__ == "__main__":
    main()
