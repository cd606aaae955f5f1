"""`python -m seqlab.score`: the command; its code is in `seqlab.analysis.score`."""

from seqlab.analysis import score

if __name__ == '__main__':
  score.run()
