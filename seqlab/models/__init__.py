"""The sequence models: the char-rnn language model (`char_rnn`), its cells and their scan."""
