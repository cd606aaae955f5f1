"""`python -m seqlab.neurons`: the command; its code is in `seqlab.analysis.neurons`."""

from seqlab.analysis import neurons

if __name__ == '__main__':
  neurons.run()
