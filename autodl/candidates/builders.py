"""The only place that builds Keras layers: an MLP from a dict of sampled parameters."""

from __future__ import annotations

import functools
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
    name: str | None = None,
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
    return keras.Model(inputs, outputs, name=name or f"{prefix}mlp")


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


def build_stacked_mlp(
    params: dict[str, Any],
    towers: int,
    n_values: int,
    task: str,
    n_classes: int,
    one_hot: tuple[int, int] = (0, 0),
):
    """`towers` independent copies of `build_mlp`'s network as one model on (batch, towers, features).

    Every weight carries a leading tower axis (batch normalization's, flattened) and towers never
    mix, so tower i trains exactly like a separate network; one model has a fraction of the
    operations of `towers` separate ones, which makes tracing and small-batch steps several
    times cheaper. Layer names match `build_mlp`'s, and each tower's weights come in `build_mlp`'s
    order, which `NetworkRecipe` relies on.

    Inputs: `n_values` feature values per tower, and with `one_hot = (n_positions, width)` the
    positions of the ones in a one-hot block of `width` columns (position `width`: none), which
    the model expands itself: a one-hot block held in memory as positions is ~30x smaller.
    """
    import keras
    from keras import layers, ops, regularizers

    l1, l2 = float(params.get("l1", 0.0)), float(params.get("l2", 0.0))
    regularizer = regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    activation = params.get("activation", "relu")
    dense = _tower_dense_class()
    inputs = [keras.Input(shape=(towers, n_values), name="features")]
    x = inputs[0]
    n_positions, width = one_hot
    if n_positions:
        inputs.append(keras.Input(shape=(towers, n_positions), dtype="int32", name="one_hot_positions"))
        x = _one_hot_block_class()(width, name="one_hot_block")(inputs[0], inputs[1])
    # Tower-major inside: (towers, batch, features), so that each layer is one batched matmul;
    # batch-major layers (an einsum "btd,tdu->btu") transpose around every matmul, forward and
    # back: measured ~30-40% slower epochs on 16k rows.
    x = ops.transpose(x, (1, 0, 2))
    for i, (units, dropout) in enumerate(zip(layer_widths(params), layer_dropouts(params), strict=True)):
        x = dense(towers, units, kernel_regularizer=regularizer, name=f"dense_{i}")(x)
        if params.get("batch_norm", False):
            # per (tower, unit) statistics, as each tower's own BatchNormalization would keep
            x = layers.Reshape((towers * units,))(ops.transpose(x, (1, 0, 2)))
            x = layers.BatchNormalization(name=f"batch_norm_{i}")(x)
            x = ops.transpose(layers.Reshape((towers, units))(x), (1, 0, 2))
        x = layers.Activation(activation, name=f"{activation}_{i}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    units, output_activation = OUTPUTS.get(task, (n_classes, "softmax"))
    outputs = ops.transpose(dense(towers, units, activation=output_activation, name="output")(x), (1, 0, 2))
    return keras.Model(inputs if n_positions else inputs[0], outputs, name="stacked_mlp")


@functools.cache
def _one_hot_block_class():
    """(values, one-hot positions) -> values followed by the expanded one-hot block."""
    import keras

    class OneHotBlock(keras.layers.Layer):
        def __init__(self, width, **kwargs):
            super().__init__(**kwargs)
            self.width = width

        def call(self, values, positions):
            # Scattered ones: a (rows, towers, positions, width) one-hot tensor summed over
            # positions would cost gigabytes on a large prediction chunk.
            ops = keras.ops
            rows, towers, count = ops.shape(positions)[0], positions.shape[1], positions.shape[2]
            grid = (rows, towers, count)
            index = ops.stack(
                [
                    ops.broadcast_to(ops.reshape(ops.arange(rows, dtype="int32"), (-1, 1, 1)), grid),
                    ops.broadcast_to(ops.reshape(ops.arange(towers, dtype="int32"), (1, -1, 1)), grid),
                    ops.cast(positions, "int32"),
                ],
                axis=-1,
            )
            ones = ops.scatter(
                ops.reshape(index, (-1, 3)),
                ops.ones((rows * towers * count,), dtype=values.dtype),
                (rows, towers, self.width + 1),
            )
            return ops.concatenate([values, ones[..., : self.width]], axis=-1)

        def compute_output_shape(self, values_shape, positions_shape):
            return (*values_shape[:-1], values_shape[-1] + self.width)

    return OneHotBlock


@functools.cache  # one class per process: a class made per model would be kept alive per trial
def _tower_dense_class():
    """A Dense layer with one kernel per tower, tower-major: (towers, batch, d) -> (towers, batch, units)."""
    import keras

    class TowerDense(keras.layers.Layer):
        def __init__(self, towers, units, activation=None, kernel_regularizer=None, **kwargs):
            super().__init__(**kwargs)
            self.towers, self.units = towers, units
            self.activation = keras.activations.get(activation)
            self.kernel_regularizer = kernel_regularizer

        def build(self, input_shape):
            # the same fan-in/fan-out scaling as one Dense layer per tower
            limit = (6.0 / (input_shape[-1] + self.units)) ** 0.5
            self.kernel = self.add_weight(
                shape=(self.towers, input_shape[-1], self.units),
                initializer=keras.initializers.RandomUniform(-limit, limit),
                regularizer=self.kernel_regularizer,
                name="kernel",
            )
            self.bias = self.add_weight(shape=(self.towers, self.units), initializer="zeros", name="bias")

        def call(self, x):
            return self.activation(keras.ops.matmul(x, self.kernel) + keras.ops.expand_dims(self.bias, 1))

    return TowerDense
