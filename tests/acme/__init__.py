"""A company's own actions, in a package of its own: the README's plugin example, tested."""
