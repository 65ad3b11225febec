"""`clusterbench zeroshot extractor=NAME dataset=NAME [zeroshot.candidates=all|level|siblings]`."""

from clusterbench.core.cli import command

main = command("zeroshot", "clusterbench.producers.zeroshot.run:run_zeroshot")

if __name__ == "__main__":
    main()
