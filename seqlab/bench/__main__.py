"""`python -m seqlab.bench`: the command; its code is in `seqlab.bench.main`."""

from seqlab.bench import main

main.run()
