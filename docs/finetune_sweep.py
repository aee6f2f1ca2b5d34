"""Ad-hoc: fine-tuning settings of EfficientNet-Lite0 on the real CIFAR-10 subset (what reaches 90%?).

One head on cached features per config (shared feature cache), then the top of
the base on cached activations (kerasimpl.partial); test accuracy on the 500
test images. float32 everywhere (TF32 off on CUDA, as on a CPU).
"""
import os, sys, json, time
os.environ.setdefault("KERAS_BACKEND", "torch")
import numpy as np, keras, torch
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
from kerasimpl import models, training, inference
from kerasimpl.data import load_dataset
from kerasimpl.heads import HeadConfig

data_path, out, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])
size = int(os.environ.get("SWEEP_SIZE", "224"))
configs = json.loads(os.environ.get("SWEEP_CONFIGS", "[]")) or [
    # layers, views, epochs, lr
    (20, 4, 5, 1e-4), (40, 4, 8, 1e-4), (20, 4, 8, 3e-4), (60, 4, 8, 1e-4), (40, 2, 8, 1e-4), (40, 8, 8, 1e-4),
    (40, 4, 8, 3e-5), (80, 4, 8, 1e-4)]
data = load_dataset(data_path)
split = data.split(0.2, 0)
start, rows = time.time(), []
for layers, views, epochs, lr in configs:
    if time.time() - start > budget:
        print("budget spent; stopping", flush=True); break
    t = time.time()
    keras.utils.set_random_seed(0)
    model = models.build_classifier("efficientnetlite0", 10, input_shape=(32, 32, 3), image_size=size,
                                    weights="imagenet", head=HeadConfig((256,), 0.3), class_names=data.class_names)
    cfg = training.TrainConfig(epochs=15, batch_size=64, learning_rate=1e-3, finetune_epochs=epochs,
                               finetune_top_layers=layers, finetune_views=views, finetune_learning_rate=lr,
                               patience=3, seed=0, inference_batch_size=256)
    folder = os.path.join(out, f"l{layers}-v{views}-e{epochs}-lr{lr:g}")
    head_model = None
    secs = training.train_classifier(model, data, split, cfg, folder, verbose=0, features_folder=os.path.join(out, "features"))
    probs = inference.predict_batches(model, data.x_test, 256)
    acc = float((probs.argmax(1) == data.y_test).mean())
    hist = training.read_csv(os.path.join(folder, "history.csv")) if hasattr(training, "read_csv") else None
    info = json.load(open(os.path.join(folder, "finetune.json"))) if os.path.exists(os.path.join(folder, "finetune.json")) else {}
    row = {"layers": layers, "views": views, "epochs": epochs, "lr": lr, "test_acc": acc, "seconds": time.time() - t,
           "stages": secs, "cut_after": info.get("cut_after"), "act_shape": info.get("activation_shape")}
    rows.append(row)
    print(json.dumps(row), flush=True)
    json.dump(rows, open(os.path.join(out, "sweep.json"), "w"), indent=1)
