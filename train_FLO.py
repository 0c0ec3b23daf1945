"""GSMFlow on FLO with the authors' settings. Edit the values here; override any with --key=value."""
from config import Config
from train import main

config = Config(
    dataset="FLO",             # data/FLO/data.mat + label.mat (E-PGN, as the authors ran it)
                               # or res101.mat + att_splits.mat (CVPR'18 release, xlsa17 layout)
    class_embedding="att",     # FLO's "att" is the 1024-d sentence embedding
    anchors="seen",
    gen_nepoch=300,            # 21 iterations each -> 6,300 iterations
    batchsize=256,
    num_coupling_layers=5,
    lr=3e-4,
    weight_decay=1e-4,
    lr_gamma=0.8,
    pi=0.07,
    prototype=3.0,
    nSample=3000,
    eval_start=2000,
    evl_interval=500,
    classifier_lr=5e-3,
    classifier_epochs=30,
    classifier_batch=1000,
    manualSeed=6152,
)

if __name__ == "__main__":
    main(config)
