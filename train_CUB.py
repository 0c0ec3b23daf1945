"""GSMFlow on CUB with the authors' settings. Edit the values here; override any with --key=value."""
from config import Config
from train import main

config = Config(
    dataset="CUB",             # data/CUB/data.mat + label.mat (E-PGN, as the authors ran it)
                               # or res101.mat + sent_splits.mat (xlsa17)
    class_embedding="sent",    # 1024-d sentence vectors; "att" = the 312-d attributes (xlsa17 layout only)
    anchors="seen",
    gen_nepoch=600,            # 27 iterations each -> 16,200 iterations
    batchsize=256,
    num_coupling_layers=5,
    lr=3e-4,
    weight_decay=1e-5,
    lr_gamma=0.8,
    pi=0.05,
    prototype=1.0,
    nSample=600,
    eval_start=2000,
    evl_interval=500,
    classifier_lr=1e-2,
    classifier_epochs=30,
    classifier_batch=3000,
    manualSeed=6152,
)

if __name__ == "__main__":
    main(config)
