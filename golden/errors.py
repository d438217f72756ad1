"""The one exception type meant for users; the command line prints it as one line."""


class SdhwError(Exception):
    """A problem with user input (model, program file, option); the message names it and the valid choice."""
