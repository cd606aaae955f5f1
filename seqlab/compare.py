"""`python -m seqlab.compare`: the command; its code is in `seqlab.analysis.compare`."""

from seqlab.analysis import compare

if __name__ == '__main__':
  compare.run()
