"""Training: configs, data plumbing, DDP / DeepSpeed engines, checkpoints and the loop.

    from zlora.train.trained import load_model_for_inference
    model, cfg = load_model_for_inference("exp/zipper_soft")
"""
