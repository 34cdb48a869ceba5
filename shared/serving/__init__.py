"""Using the winner: servable model packages (:mod:`~shared.serving.package`), their MLflow pyfunc
(:mod:`~shared.serving.pyfunc`), logged by :mod:`~shared.serving.mlflow_model` and registered by
:mod:`~shared.serving.registration`; ``transferlab predict`` (:mod:`~shared.serving.predict`) and ONNX
export (:mod:`~shared.serving.onnx`)."""
