"""The only place that builds Keras layers: an MLP from a dict of sampled parameters."""

from __future__ import annotations

from typing import Any

OUTPUTS = {"binary": (1, "sigmoid"), "regression": (1, None)}


def layer_widths(params: dict[str, Any]) -> list[int]:
    """Units per hidden layer: `units_0..units_{n-1}` or one shared `units`."""
    n_layers = int(params.get("n_layers", 2))
    return [int(params.get(f"units_{i}", params.get("units", 64))) for i in range(n_layers)]


def layer_dropouts(params: dict[str, Any]) -> list[float]:
    n_layers = int(params.get("n_layers", 2))
    return [float(params.get(f"dropout_{i}", params.get("dropout", 0.0))) for i in range(n_layers)]


def build_mlp(
    params: dict[str, Any],
    n_inputs: int,
    task: str,
    n_classes: int,
    prefix: str = "",
    cardinalities: tuple[int, ...] = (),
):
    """An uncompiled Keras MLP for `task` with `n_inputs` features; `prefix` keeps layer names unique.

    With `cardinalities`, the last len(cardinalities) inputs are category codes, each fed
    through its own learned embedding (entity embeddings) before the dense layers.
    """
    import keras
    from keras import layers, regularizers

    l1, l2 = float(params.get("l1", 0.0)), float(params.get("l2", 0.0))
    regularizer = regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    activation = params.get("activation", "relu")
    inputs = keras.Input(shape=(n_inputs,), name=f"{prefix}features")
    x = (
        _embed(inputs, n_inputs, cardinalities, int(params.get("embedding_size", 8)), prefix)
        if cardinalities
        else inputs
    )
    for i, (units, dropout) in enumerate(zip(layer_widths(params), layer_dropouts(params), strict=True)):
        x = layers.Dense(units, kernel_regularizer=regularizer, name=f"{prefix}dense_{i}")(x)
        if params.get("batch_norm", False):
            x = layers.BatchNormalization(name=f"{prefix}batch_norm_{i}")(x)
        x = layers.Activation(activation, name=f"{prefix}{activation}_{i}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"{prefix}dropout_{i}")(x)
    units, output_activation = OUTPUTS.get(task, (n_classes, "softmax"))
    outputs = layers.Dense(units, activation=output_activation, name=f"{prefix}output")(x)
    return keras.Model(inputs, outputs, name=f"{prefix}mlp")


def _embed(inputs, n_inputs: int, cardinalities: tuple[int, ...], size: int, prefix: str):
    """Numeric block + one embedding per category-code column, concatenated."""
    from keras import layers, ops

    n_numeric = n_inputs - len(cardinalities)
    pieces = [inputs[:, :n_numeric]] if n_numeric else []
    for j, cardinality in enumerate(cardinalities):
        codes = ops.cast(inputs[:, n_numeric + j], "int32")
        width = max(1, min(size, (cardinality + 1) // 2))  # small vocabularies need few dimensions
        pieces.append(layers.Embedding(cardinality, width, name=f"{prefix}embedding_{j}")(codes))
    return layers.Concatenate(name=f"{prefix}features_embedded")(pieces) if len(pieces) > 1 else pieces[0]


def build_optimizer(params: dict[str, Any], steps_per_epoch: int, max_epochs: int):
    """The optimizer and learning-rate schedule named in `params`."""
    import keras

    learning_rate = float(params.get("learning_rate", 1e-3))
    schedule = params.get("lr_schedule", "constant")
    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(1, steps_per_epoch * max_epochs), alpha=0.05
        )
    name = params.get("optimizer", "adam")
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=float(params.get("weight_decay", 1e-4)))
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate,
            momentum=float(params.get("momentum", 0.9)),
            nesterov=bool(params.get("nesterov", True)),
        )
    raise ValueError(f"unknown optimizer {name!r}")


def loss_for(task: str) -> str:
    return {"binary": "binary_crossentropy", "regression": "mean_squared_error"}.get(
        task, "sparse_categorical_crossentropy"
    )
