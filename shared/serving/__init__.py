"""Using the winner: servable model packages (:mod:`~shared.serving.package`), their MLflow pyfunc
(:mod:`~shared.serving.pyfunc`), logging and registration (:mod:`~shared.serving.mlflow_model`),
``transferlab predict`` (:mod:`~shared.serving.predict`) and ONNX export (:mod:`~shared.serving.onnx`)."""
