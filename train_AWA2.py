"""GSMFlow on AWA2 with the authors' settings. Edit the values here; override any with --key=value."""
from config import Config
from train import main

config = Config(
    dataset="AWA2",            # data/AWA2/res101.mat + att_splits.mat (xlsa17)
    class_embedding="att",     # 85-d attributes
    anchors="seen",            # relative-positioning anchors from the seen classes' vectors
    gen_nepoch=500,            # flow epochs: 91 iterations each -> 45,500 iterations
    batchsize=256,
    num_coupling_layers=3,
    lr=3e-4,
    weight_decay=3e-6,
    lr_gamma=0.92,             # StepLR, every 15 epochs
    pi=0.15,                   # visual perturbation scale
    prototype=10.0,            # prototype loss weight
    nSample=50000,             # synthetic features per unseen class
    eval_start=30000,
    evl_interval=500,
    classifier_lr=1e-3,
    classifier_epochs=30,
    classifier_batch=1200,
    manualSeed=6152,
)

if __name__ == "__main__":
    main(config)
