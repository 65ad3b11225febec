"""`clusterbench probe dataset=NAME [extractor=NAME] [overrides]` (conf/probe.yaml)."""

from clusterbench.core.cli import command

main = command("probe", "clusterbench.producers.probe.run:run")

if __name__ == "__main__":
    main()
