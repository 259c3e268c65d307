"""Stage ``distill``: the student trained from the frozen teacher."""
