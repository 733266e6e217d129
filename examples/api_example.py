"""The Python API on the bundled data: a search from a CSV, then a scikit-learn style estimator.

Run from the project root:  python examples/api_example.py
"""

from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from autodl import AutoDLClassifier, search

DATA = Path(__file__).parent / "data"


def main() -> None:
    result = search(DATA / "wage.csv", target="wage", time_limit=45, tracking=False)
    print(result.leaderboard.head())
    print("test scores:", result.test_scores)

    penguins = pd.read_csv(DATA / "penguins.csv")
    X, y = penguins.drop(columns="species"), penguins["species"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    clf = AutoDLClassifier(time_limit=30).fit(X_train, y_train)
    print("classes:", list(clf.classes_))
    print("test accuracy:", clf.score(X_test, y_test))
    print(clf.predict_proba(X_test)[:3])


if __name__ == "__main__":
    main()
