"""napari plugin of unetkit (``pip install unetkit[napari]``; manifest ``napari.yaml``).

* :mod:`.prediction`: a napari layer's array through a :class:`~unetkit.inference.Predictor`, plane by
  plane, with tile progress and cancellation (no napari or Qt needed).
* :mod:`._widget`: the *Predict* dock widget (run prediction in a worker thread, add the result layers).
* :mod:`._reader`: opens what ``unetkit predict --out DIR`` writes (masks, objects, probabilities).

Importing this package imports neither napari nor Qt: only the widget modules do.
"""
