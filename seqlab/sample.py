"""`python -m seqlab.sample`: the command; its code is in `seqlab.analysis.sample`."""

from seqlab.analysis import sample

if __name__ == '__main__':
  sample.run()
