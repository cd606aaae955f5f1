"""The sequence models, selected by `model.name` (`registry`): the char-rnn language model
(`char_rnn`, its `cells` and their scan in `recurrence`) and the zoo's models on the same
`(tokens, carry) -> (logits, carry)` interface (`min_rnn`, `hawk`, `mamba`, `gpt`)."""
