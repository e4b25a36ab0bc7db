"""Estimators from outside scikit-learn, as a user's own package would provide them: skops does
not know these types, so a model file that holds one loads only if the spec names it."""

from sklearn.linear_model import LogisticRegression


class ShrunkLogistic(LogisticRegression):
    """A user's classifier: logistic regression with a stronger default penalty."""

    def __init__(self, C: float = 0.5, max_iter: int = 500, random_state=None):
        super().__init__(C=C, max_iter=max_iter, random_state=random_state)


class NeedsArguments:
    """Not a scikit-learn estimator: its constructor requires an argument."""

    def __init__(self, size):
        self.size = size

    def fit(self, x, y):
        return self

    def predict(self, x):
        return x

    def get_params(self, deep=True):
        return {"size": self.size}

    def set_params(self, **params):
        return self
