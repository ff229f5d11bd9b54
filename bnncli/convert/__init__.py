"""Converters from other toolkits' model files to bnncli checkpoints (``bnn import``).

``larq``: Larq Zoo's Keras HDF5 weights (bnncli.convert.larq, reading with bnncli.convert.keras_h5).
"""
