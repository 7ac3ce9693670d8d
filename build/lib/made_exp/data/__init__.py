"""The data: the dataset registry and its files, minibatching, and the Lightning DataModules."""
