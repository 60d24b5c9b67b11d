"""Errors that are a user's mistake: the message says what is wrong and nothing was changed."""


class UserError(ValueError):
    pass
