using Google.Protobuf;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

public class OnnxPreprocessorTests
{
    private static readonly long[] ImageShape = [1, 3, 6, 6];

    [Fact]
    public void FoldBatchNormalization_ComputesWhatTheConvAndNormDid()
    {
        ModelProto proto = ConvNorm(withBias: true);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        Assert.Equal(1, OnnxPreprocessor.FoldBatchNormalization(model));
        Assert.DoesNotContain(model.Proto.Graph.Node, n => n.OpType == "BatchNormalization");
        Assert.DoesNotContain(model.Proto.Graph.Initializer, t => t.Name is "w" or "gamma" or "mean");

        foreach (int seed in new[] { 1, 2 })
        {
            float[] image = Random(3 * 6 * 6, seed, 4);
            float[] expected = RunSingle(proto.ToByteArray(), "image", image, ImageShape);
            float[] actual = RunSingle(model.Proto.ToByteArray(), "image", image, ImageShape);
            for (int i = 0; i < expected.Length; i++)
            {
                Assert.Equal(expected[i], actual[i], 1e-4f);
            }
        }
    }

    [Fact]
    public void FoldBatchNormalization_AddsABiasWhereTheConvHadNone_AndSkipsSharedOutputs()
    {
        ModelProto proto = ConvNorm(withBias: false);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        Assert.Equal(1, OnnxPreprocessor.FoldBatchNormalization(model));
        Assert.Equal(3, model.Proto.Graph.Node.Single(n => n.OpType == "Conv").Input.Count);
        float[] image = Random(3 * 6 * 6, 5, 4);
        float[] expected = RunSingle(proto.ToByteArray(), "image", image, ImageShape);
        float[] actual = RunSingle(model.Proto.ToByteArray(), "image", image, ImageShape);
        Assert.True(Cosine(expected, actual) > 0.999999);

        // The Conv's output is also a graph output: folding would change it, so the pair stays.
        ModelProto shared = ConvNorm(withBias: true);
        shared.Graph.Output.Add(Value("conv", 1, 4, 6, 6));
        OnnxModel sharedModel = OnnxModel.Parse(shared.ToByteArray());
        Assert.Equal(0, OnnxPreprocessor.FoldBatchNormalization(sharedModel));
        Assert.Equal(shared, sharedModel.Proto);
    }

    [Fact]
    public void FoldBatchNormalization_RejectsParametersOfTheWrongLength()
    {
        ModelProto proto = ConvNorm(withBias: true);
        TensorProto mean = proto.Graph.Initializer.First(t => t.Name == "mean");
        mean.Dims.Clear();
        mean.Dims.Add(2);
        mean.RawData = Tensor("mean", [1f, 2f], 2).RawData;
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        Assert.Contains("'mean'", Assert.Throws<InvalidDataException>(() => OnnxPreprocessor.FoldBatchNormalization(model)).Message, StringComparison.Ordinal);
        Assert.Equal(proto, model.Proto);
    }

    [Fact]
    public void FoldBatchNormalization_LeavesTrainingModeAlone_AndRefusesOldOpsets()
    {
        ModelProto training = ConvNorm(withBias: true);
        training.OpsetImport[0].Version = 15;
        training.Graph.Node[1].Attribute.Add(Int("training_mode", 1));
        OnnxModel model = OnnxModel.Parse(training.ToByteArray());
        Assert.Equal(0, OnnxPreprocessor.FoldBatchNormalization(model));
        Assert.Equal(training, model.Proto);

        ModelProto old = ConvNorm(withBias: true);
        old.OpsetImport[0].Version = 8;
        Assert.Contains("OnnxOpsetUpgrader", Assert.Throws<NotSupportedException>(() => OnnxPreprocessor.FoldBatchNormalization(OnnxModel.Parse(old.ToByteArray()))).Message, StringComparison.Ordinal);
    }

    /// <summary>image [1, 3, 6, 6] -> Conv(w [4, 3, 3, 3], b?, pads 1) = conv -> BatchNormalization = out.</summary>
    private static ModelProto ConvNorm(bool withBias)
    {
        List<TensorProto> initializers =
        [
            Tensor("w", Random(4 * 27, 10), 4, 3, 3, 3),
            Tensor("gamma", [0.5f, 2f, -1f, 0.01f], 4),
            Tensor("beta", [0.1f, -0.2f, 0.3f, 4f], 4),
            Tensor("mean", [0.05f, -0.1f, 0.2f, 0f], 4),
            Tensor("var", [0.5f, 2f, 0.01f, 1e-4f], 4),
        ];
        if (withBias)
        {
            initializers.Add(Tensor("b", [0.3f, -0.3f, 0.1f, 0f], 4));
        }

        return Model(
            "conv-norm",
            [
                Node("Conv", "conv_node", withBias ? ["image", "w", "b"] : ["image", "w"], ["conv"], Ints("pads", 1, 1, 1, 1)),
                Node("BatchNormalization", "norm", ["conv", "gamma", "beta", "mean", "var"], ["out"], new AttributeProto { Name = "epsilon", Type = AttributeProto.Types.AttributeType.Float, F = 1e-3f }),
            ],
            initializers,
            [Value("image", ImageShape)],
            [Value("out", 1, 4, 6, 6)]);
    }
}
