
using System.Runtime.InteropServices;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

using Quantization.Onnx.Protos;
using Quantization.Samples;

using DataType = Quantization.Onnx.Protos.TensorProto.Types.DataType;

namespace Quantization.Onnx.Tests;

/// <summary>
/// ONNX Runtime as the oracle: tiny models at old opsets, run before and after the upgrade on random inputs, must give the
/// same outputs (shape and values); the upgraded model must import the target opset. Plus the real ResNet-18 (opset 8).
/// </summary>
public class OnnxOpsetUpgraderTests
{
    private const long Big = long.MaxValue;

    public static TheoryData<long, long> OldAndTargetOpsets => new() { { 9, 13 }, { 10, 14 }, { 11, 15 }, { 12, 16 }, { 9, 17 }, { 11, 21 }, { 12, 21 } };

    [Theory]
    [InlineData(7, true)]
    [InlineData(8, true)]
    [InlineData(8, false)]
    [InlineData(9, false)]
    public void BatchNormalization_SpatialOneOrAbsent_IsDropped(long opset, bool spatial)
    {
        NodeProto bn = Node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], Float("epsilon", 1e-3f));
        if (spatial)
        {
            bn.Attribute.Add(Int("spatial", 1));
        }

        ModelProto proto = Model(opset, [bn], [Input("x", 2, 3, 4, 5)], [Output("y")],
            [Floats("scale", Random(3, 1), 3), Floats("bias", Random(3, 2), 3), Floats("mean", Random(3, 3), 3), Floats("var", Positive(3, 4), 3)]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 2, 3, 4, 5)]);
        Assert.DoesNotContain(model.Proto.Graph.Node.Single().Attribute, a => a.Name == "spatial");
    }

    [Fact]
    public void BatchNormalization_SpatialZero_IsRejected()
    {
        NodeProto bn = Node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], Int("spatial", 0));
        bn.Name = "bn";
        ModelProto proto = Model(8, [bn], [Input("x", 2, 3, 4)], [Output("y")],
            [Floats("scale", Random(12, 1), 3, 4), Floats("bias", Random(12, 2), 3, 4), Floats("mean", Random(12, 3), 3, 4), Floats("var", Positive(12, 4), 3, 4)]);
        NotSupportedException e = Assert.Throws<NotSupportedException>(() => OnnxOpsetUpgrader.Upgrade(OnnxModel.Parse(proto.ToByteArray())));
        Assert.Contains("'bn' (BatchNormalization)", e.Message, StringComparison.Ordinal);
        Assert.Contains("spatial = 0", e.Message, StringComparison.Ordinal);
        Assert.Contains("opset 8 to 13", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(8, 1L)]
    [InlineData(11, -1L)]
    [InlineData(12, 1L)]
    public void Split_SplitAttribute_BecomesInput(long opset, long axis)
    {
        ModelProto proto = Model(opset,
            [Node("Split", ["x"], ["a", "b", "c"], Int("axis", axis), Ints("split", 1, 3, 2)), Node("Split", ["x"], ["d", "e"], Int("axis", 0))],
            [Input("x", 2, 6)], [Output("a"), Output("b"), Output("c"), Output("d"), Output("e")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 2, 6)]);
        NodeProto split = model.Proto.Graph.Node[0];
        Assert.DoesNotContain(split.Attribute, a => a.Name == "split");
        Assert.Equal([1L, 3, 2], model.Proto.Graph.Initializer.Single(t => t.Name == split.Input[1]).Int64DataOrRaw());
        Assert.Single(model.Proto.Graph.Node[1].Input); // an even split needs no input
    }

    [Theory]
    [MemberData(nameof(OldAndTargetOpsets))]
    public void SqueezeUnsqueezeReduceSum_AxesAttribute_BecomesInput(long opset, long target)
    {
        ModelProto proto = Model(opset,
            [
                Node("Squeeze", ["x"], ["s"], Ints("axes", 1)),
                Node("Unsqueeze", ["s"], ["u"], Ints("axes", 0, 3)),
                Node("ReduceSum", ["u"], ["r"], Ints("axes", 1, 3), Int("keepdims", 0)),
                Node("ReduceSum", ["x"], ["all"]),
                Node("Squeeze", ["x"], ["every"]),
            ],
            [Input("x", 2, 1, 3)], [Output("u"), Output("r"), Output("all"), Output("every")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 2, 1, 3)], target);
        Assert.All(model.Proto.Graph.Node, n => Assert.DoesNotContain(n.Attribute, a => a.Name == "axes"));
        Assert.Equal([2, 2, 2, 1, 1], model.Proto.Graph.Node.Select(n => n.Input.Count));
    }

    [Theory]
    [InlineData(7)]
    [InlineData(9)]
    public void Slice_Attributes_BecomeInputs(long opset)
    {
        ModelProto proto = Model(opset,
            [
                Node("Slice", ["x"], ["a"], Ints("starts", 1, -4), Ints("ends", Big, -1), Ints("axes", 0, 1)),
                Node("Slice", ["x"], ["b"], Ints("starts", 0, 2), Ints("ends", 3, 100)),
                Node("Slice", ["x"], ["c"], Ints("starts", -2), Ints("ends", 1000), Ints("axes", 1)),
            ],
            [Input("x", 4, 6)], [Output("a"), Output("b"), Output("c")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 4, 6)]);
        Assert.Equal([4, 3, 4], model.Proto.Graph.Node.Select(n => n.Input.Count));
    }

    [Theory]
    [InlineData(8)]
    [InlineData(10)]
    public void Pad_Attributes_BecomeInputs(long opset)
    {
        ModelProto proto = Model(opset,
            [
                Node("Pad", ["x"], ["constant"], Ints("pads", 0, 1, 2, 0), Float("value", 1.5f)),
                Node("Pad", ["x"], ["zero"], Ints("pads", 1, 0, 0, 3)),
                Node("Relu", ["x"], ["relu"]),
                Node("Pad", ["relu"], ["reflect"], Ints("pads", 1, 2, 1, 2), Str("mode", "reflect")),
                Node("Pad", ["x"], ["edge"], Ints("pads", 2, 1, 0, 2), Str("mode", "edge"), Float("value", 9f)),
            ],
            [Input("x", 3, 4)], [Output("constant"), Output("zero"), Output("reflect"), Output("edge")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 3, 4)]);
        Assert.Equal([3, 2, 1, 2, 3], model.Proto.Graph.Node.Select(n => n.Input.Count));
    }

    [Fact]
    public void Clip_MinMax_BecomeInputsOfTheInputsType()
    {
        ModelProto proto = Model(10,
            [
                Node("Clip", ["x"], ["both"], Float("min", -0.5f), Float("max", 0.7f)),
                Node("Clip", ["x"], ["upper"], Float("max", 0.25f)),
                Node("Sigmoid", ["x"], ["sigmoid"]),
                Node("Clip", ["sigmoid"], ["lower"], Float("min", 0.6f)),
                Node("Clip", ["x"], ["none"]),
            ],
            [Input("x", 5, 7)], [Output("both"), Output("upper"), Output("lower"), Output("none")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 5, 7)]);
        // Present inputs, in order: x, min, max; an absent min is an empty name. The bounds are float scalars.
        Assert.Equal(["111", "101", "11", "1"], model.Proto.Graph.Node.Where(n => n.OpType == "Clip").Select(n => string.Concat(n.Input.Select(i => i.Length > 0 ? '1' : '0'))));
        Assert.All(model.Proto.Graph.Initializer, t => Assert.Equal(((int)DataType.Float, 0, 4), (t.DataType, t.Dims.Count, t.RawData.Length)));
    }

    [Fact]
    public void Clip_OnAValueOfUnknownType_IsRejected()
    {
        // TopK's values output has the input's type, but the upgrader does not follow it; it refuses rather than guesses.
        ModelProto proto = Model(9, [Node("TopK", ["x"], ["v", "i"], Int("k", 2)), Node("Clip", ["v"], ["y"], Float("max", 0.1f))], [Input("x", 2, 4)], [Output("y")]);
        NotSupportedException e = Assert.Throws<NotSupportedException>(() => OnnxOpsetUpgrader.Upgrade(OnnxModel.Parse(proto.ToByteArray())));
        Assert.Contains("(Clip)", e.Message, StringComparison.Ordinal);
        Assert.Contains("'v'", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(9)]
    public void TopK_K_BecomesInput(long opset)
    {
        ModelProto proto = Model(opset, [Node("TopK", ["x"], ["values", "indices"], Int("k", 3))], [Input("x", 3, 7)], [Output("values"), Output("indices", DataType.Int64)]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 3, 7)]);
        Assert.Equal(2, model.Proto.Graph.Node.Single().Input.Count);
    }

    [Theory]
    [InlineData(7)]
    [InlineData(10)]
    [InlineData(11)]
    public void Dropout_BecomesIdentity(long opset)
    {
        ModelProto proto = Model(opset, [Node("Dropout", ["x"], ["d", "mask"], Float("ratio", 0.3f)), Node("Relu", ["d"], ["y"])], [Input("x", 4, 5)], [Output("y")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 4, 5)]);
        NodeProto identity = model.Proto.Graph.Node[0];
        Assert.Equal(("Identity", 1, 0), (identity.OpType, identity.Output.Count, identity.Attribute.Count));
    }

    [Fact]
    public void Dropout_WithItsMaskInUse_IsRejected()
    {
        ModelProto proto = Model(10, [Node("Dropout", ["x"], ["d", "mask"])], [Input("x", 4, 5)], [Output("d"), Output("mask", DataType.Bool)]);
        NotSupportedException e = Assert.Throws<NotSupportedException>(() => OnnxOpsetUpgrader.Upgrade(OnnxModel.Parse(proto.ToByteArray())));
        Assert.Contains("'mask'", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(7, "nearest")]
    [InlineData(8, "linear")]
    public void Upsample_ScalesAttribute_BecomesResize(long opset, string mode)
    {
        ModelProto proto = Model(opset, [Node("Upsample", ["x"], ["y"], Str("mode", mode), FloatList("scales", 1, 1, 2, 3))], [Input("x", 1, 2, 3, 4)], [Output("y")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 1, 2, 3, 4)]);
        AssertResize(model.Proto.Graph.Node.Single(), mode);
    }

    [Theory]
    [InlineData(9, "Upsample", "nearest", 2f)]
    [InlineData(9, "Upsample", "linear", 2f)]
    [InlineData(10, "Resize", "nearest", 1.5f)]
    [InlineData(10, "Resize", "linear", 1.5f)]
    [InlineData(10, "Resize", "nearest", 0.5f)]
    public void UpsampleAndResize10_ScalesInput_BecomesResize(long opset, string op, string mode, float scale)
    {
        ModelProto proto = Model(opset, [Node(op, ["x", "scales"], ["y"], Str("mode", mode))], [Input("x", 1, 2, 4, 6)], [Output("y")], [Floats("scales", [1, 1, scale, 2 * scale], 4)]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 1, 2, 4, 6)], tolerance: mode == "linear" ? 1e-6 : 0);
        AssertResize(model.Proto.Graph.Node.Single(), mode);
    }

    [Theory]
    [InlineData("Softmax")]
    [InlineData("LogSoftmax")]
    [InlineData("Hardmax")]
    public void SoftmaxFamily_Old2DMeaning_IsKept(string op)
    {
        ModelProto proto = Model(11,
            [
                Node(op, ["x"], ["default_axis"]),
                Node(op, ["x"], ["axis0"], Int("axis", 0)),
                Node(op, ["x"], ["last"], Int("axis", 2)),
                Node(op, ["x"], ["minus_one"], Int("axis", -1)),
                Node(op, ["x"], ["minus_two"], Int("axis", -2)),
                Node(op, ["unranked"], ["unranked_last"], Int("axis", 2)),
                Node("Relu", ["x"], ["relu"]),
                Node(op, ["relu"], ["intermediate"], Int("axis", 1)),
            ],
            [Input("x", 2, 3, 4), Unranked("unranked")],
            [Output("default_axis"), Output("axis0"), Output("last"), Output("minus_one"), Output("minus_two"), Output("unranked_last"), Output("intermediate")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 2, 3, 4), Feed("unranked", 2, 3, 4)], tolerance: op == "Hardmax" ? 0 : 1e-6);
        // Only the two nodes known to work on the last axis stay single nodes; the others become Flatten, op, Shape, Reshape.
        Assert.Equal(2 + (5 * 4) + 1, model.Proto.Graph.Node.Count);
        Assert.All(model.Proto.Graph.Node.Where(n => n.OpType == op), n => Assert.Equal(-1, n.Attribute.Single(a => a.Name == "axis").I));
    }

    [Fact]
    public void Scatter_BecomesScatterElements()
    {
        ModelProto proto = Model(10,
            [Node("Scatter", ["x", "indices", "updates"], ["y"], Int("axis", 0)), Node("Scatter", ["x", "indices", "updates"], ["z"], Int("axis", -1))],
            [Input("x", 3, 4)], [Output("y"), Output("z")],
            [Int64s("indices", [1, 0, 2, 0, 0, 2, 1, 1], 2, 4), Floats("updates", Random(8, 5), 2, 4)]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 3, 4)]);
        Assert.All(model.Proto.Graph.Node, n => Assert.Equal("ScatterElements", n.OpType));
    }

    [Theory]
    [InlineData(8, 13)]
    [InlineData(8, 17)]
    [InlineData(10, 15)]
    [InlineData(8, 21)]
    [InlineData(17, 21)]
    public void TableOperators_ConvolutionalNetwork_KeepTheirOutputs(long opset, long target)
    {
        ModelProto proto = Model(opset,
            [
                Node("Conv", ["x", "w", "b"], ["conv"], Ints("pads", 1, 1, 1, 1), Ints("kernel_shape", 3, 3)),
                Node("Relu", ["conv"], ["relu"]),
                Node("MaxPool", ["relu"], ["max"], Ints("kernel_shape", 2, 2), Ints("strides", 2, 2)),
                Node("AveragePool", ["max"], ["avg"], Ints("kernel_shape", 2, 2), Ints("pads", 0, 0, 1, 1), Int("count_include_pad", 1)),
                Node("GlobalAveragePool", ["avg"], ["global"]),
                Node("Flatten", ["global"], ["flat"], Int("axis", 1)),
                Node("Gemm", ["flat", "w2", "b2"], ["gemm"], Int("transB", 1), Float("alpha", 0.5f)),
                Node("Sigmoid", ["gemm"], ["sigmoid"]),
                Node("Tanh", ["gemm"], ["tanh"]),
                Node("Concat", ["sigmoid", "tanh"], ["y"], Int("axis", 1)),
                Node("LeakyRelu", ["avg"], ["leaky"], Float("alpha", 0.2f)),
                Node("ReduceMean", ["leaky"], ["mean"], Ints("axes", 2, 3), Int("keepdims", 0)),
            ],
            [Input("x", 2, 3, 8, 8)], [Output("y"), Output("mean")],
            [Floats("w", Random(4 * 3 * 3 * 3, 1), 4, 3, 3, 3), Floats("b", Random(4, 2), 4), Floats("w2", Random(5 * 4, 3), 5, 4), Floats("b2", Random(5, 4), 5)]);

        // ORT runs the opset-19 pools with other summation orders than the older kernels (the meaning is the same): float
        // rounding, which the Gemm and its cancellations carry to a few millionths of the outputs.
        AssertUpgradeKeepsOutputs(proto, [Feed("x", 2, 3, 8, 8)], target, tolerance: target >= 19 ? 1e-5 : 0);
    }

    [Theory]
    [MemberData(nameof(OldAndTargetOpsets))]
    public void TableOperators_ElementwiseAndShapes_KeepTheirOutputs(long opset, long target)
    {
        ModelProto proto = Model(opset,
            [
                Node("Add", ["x", "z"], ["add"]),
                Node("Sub", ["add", "x"], ["sub"]),
                Node("Mul", ["sub", "z"], ["mul"]),
                Node("Abs", ["mul"], ["abs"]),
                Node("Div", ["x", "abs"], ["div"]),
                Node("Sqrt", ["abs"], ["sqrt"]),
                Node("Log", ["abs"], ["log"]),
                Node("Exp", ["x"], ["exp"]),
                Node("Pow", ["abs", "z"], ["pow"]),
                Node("Erf", ["x"], ["erf"]),
                Node("Transpose", ["div"], ["transposed"], Ints("perm", 2, 0, 1)),
                Node("Reshape", ["transposed", "shape"], ["reshaped"]),
                Node("MatMul", ["reshaped", "w"], ["matmul"]),
                Node("Concat", ["sqrt", "log", "exp", "pow", "erf"], ["concat"], Int("axis", 0)),
                Node("Gather", ["concat", "indices"], ["gathered"], Int("axis", 2)),
                Node("Shape", ["gathered"], ["shape_of"]),
                Node("Cast", ["shape_of"], ["shape_float"], Int("to", (long)DataType.Float)),
                Node("Identity", ["matmul"], ["y"]),
            ],
            [Input("x", 2, 3, 4), Input("z", 2, 3, 4)], [Output("y"), Output("gathered"), Output("shape_float")],
            [Int64s("shape", [4, -1], 2), Floats("w", Random(6 * 5, 7), 6, 5), Int64s("indices", [3, 0, 0, 2], 4)]);
        AssertUpgradeKeepsOutputs(proto, [Feed("x", 2, 3, 4), Feed("z", 2, 3, 4)], target);
    }

    [Theory]
    [InlineData(13, 18)]
    [InlineData(17, 21)]
    [InlineData(9, 21)]
    public void ReductionsAndEqualSplits_ChangedAt18_TakeInputsAndOutputCounts(long opset, long target)
    {
        ModelProto proto = Model(opset,
            [
                Node("ReduceMean", ["x"], ["mean"], Ints("axes", -1)),
                Node("ReduceMax", ["x"], ["max"], Ints("axes", 0, 2), Int("keepdims", 0)),
                Node("ReduceL2", ["x"], ["l2"]),
                Node("ReduceSumSquare", ["x"], ["squares"], Ints("axes", 1)),
                Node("Split", ["x"], ["a", "b"], Int("axis", 2)),
            ],
            [Input("x", 2, 3, 4)], [Output("mean"), Output("max"), Output("l2"), Output("squares"), Output("a"), Output("b")]);
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 2, 3, 4)], target);
        Assert.All(model.Proto.Graph.Node, n => Assert.DoesNotContain(n.Attribute, a => a.Name == "axes"));
        Assert.Equal([2, 2, 1, 2, 1], model.Proto.Graph.Node.Select(n => n.Input.Count));
        Assert.Equal(2, model.Proto.Graph.Node[4].Attribute.Single(a => a.Name == "num_outputs").I);
        Assert.Equal(target >= 21 ? 10 : 8, model.Proto.IrVersion);
    }

    [Fact]
    public void IfSubgraphs_AreUpgradedToo()
    {
        static GraphProto Branch(string name, string op) => new()
        {
            Name = name,
            Node = { Node(op, ["x"], [name + "_t"]), Node("Unsqueeze", [name + "_t"], [name + "_out"], Ints("axes", 0)) },
            Output = { Output(name + "_out") },
        };

        ModelProto proto = Model(11,
            [Node("If", ["cond"], ["y"], new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("then", "Neg") }, new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("else", "Relu") })],
            [Input("x", 3, 4), Input("cond", DataType.Bool)], [Output("y")]);
        foreach (bool condition in new[] { true, false })
        {
            OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 3, 4), new InputTensor("cond", new[] { condition }, [])]);
            foreach (GraphProto branch in model.Proto.Graph.Node.Single().Attribute.Select(a => a.G))
            {
                NodeProto unsqueeze = branch.Node.Single(n => n.OpType == "Unsqueeze");
                Assert.Empty(unsqueeze.Attribute);
                Assert.Equal([0L], branch.Initializer.Single(t => t.Name == unsqueeze.Input[1]).Int64DataOrRaw());
            }
        }
    }

    [Fact]
    public void OtherDomains_AreLeftAlone()
    {
        NodeProto gelu = new() { Name = "gelu", OpType = "Gelu", Domain = "com.microsoft", Input = { "x" }, Output = { "g" } };
        ModelProto proto = Model(11, [gelu, Node("Unsqueeze", ["g"], ["y"], Ints("axes", 1))], [Input("x", 3, 4)], [Output("y")]);
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 3, 4)], 17);
        Assert.Equal(gelu, model.Proto.Graph.Node[0]);
        Assert.Equal(1, model.Proto.OpsetImport.Single(o => o.Domain == "com.microsoft").Version);
        Assert.Equal(8, model.Proto.IrVersion);
    }

    [Fact]
    public void NewInitializers_NeverTakeAnExistingName()
    {
        // "s_split" is already a graph input and "s_split_1" a node output: the split sizes must go elsewhere.
        ModelProto proto = Model(11,
            [Node("Identity", ["x"], ["s_split_1"]), Node("Split", ["s_split_1"], ["a", "b"], Ints("split", 1, 3), Int("axis", 1)), Node("Add", ["a", "s_split"], ["y"])],
            [Input("x", 2, 4), Input("s_split", 2, 1)], [Output("y"), Output("b")]);
        proto.Graph.Node[1].Name = "s";
        OnnxModel model = AssertUpgradeKeepsOutputs(proto, [Feed("x", 2, 4), Feed("s_split", 2, 1)]);
        Assert.Equal("s_split_2", model.Proto.Graph.Node[1].Input[1]);
    }

    [Fact]
    public void ResNet18_FromNuGet_UpgradesWithTheSameFeatures()
    {
        OnnxModel original = OnnxModel.Load(ResNet18.ModelPath);
        Assert.Equal(8, original.Opset);
        Assert.Equal(3, original.Proto.IrVersion);
        Assert.Contains(original.Proto.Graph.Node, n => n.OpType == "BatchNormalization" && n.Attribute.Any(a => a.Name == "spatial"));
        OnnxModel upgraded = AssertRealModelUpgrades(original, 0, 1);
        Assert.Equal(7, upgraded.Proto.IrVersion);
        Assert.DoesNotContain(upgraded.Proto.Graph.Node, n => n.Attribute.Any(a => a.Name == "spatial"));

        // The point of it all: the upgraded model can be weight-quantized, and still computes about the same features.
        Assert.Contains("OnnxOpsetUpgrader.Upgrade", Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(original)).Message, StringComparison.Ordinal);
        InputTensor[] feeds = Feeds(upgraded, 0, 1, seed: 3);
        double[] before = Run(upgraded.Proto.ToByteArray(), feeds, GraphOptimizationLevel.ORT_ENABLE_BASIC).Values.Single().Values;
        Assert.NotEmpty(OnnxWeightQuantizer.Quantize(upgraded));
        double[] after = Run(upgraded.Proto.ToByteArray(), feeds, GraphOptimizationLevel.ORT_ENABLE_BASIC).Values.Single().Values;
        Assert.True(Cosine(before, after) > 0.999, $"cosine {Cosine(before, after)}");
    }

    [Fact]
    public void ResNetPreprocess_FromNuGet_UpgradesWithTheSameOutput()
    {
        OnnxModel original = OnnxModel.Load(ResNet18.PreprocessModelPath);
        Assert.Equal(8, original.Opset);
        Assert.Contains(original.Proto.Graph.Node, n => n.OpType == "Split" && n.Attribute.Any(a => a.Name == "split"));
        OnnxModel upgraded = AssertRealModelUpgrades(original, 0, 255);
        Assert.DoesNotContain(upgraded.Proto.Graph.Node, n => n.Attribute.Any(a => a.Name == "split"));
    }

    [Fact]
    public void UnknownOperator_IsRejectedByName()
    {
        ModelProto proto = Model(8, [Node("Squeeze", ["x"], ["r"], Ints("axes", 0)), Node("Crop", ["r"], ["y"], Ints("border", 1, 1, 1, 1))], [Input("x", 1, 1, 4, 4)], [Output("y")]);
        proto.Graph.Node[1].Name = "crop_layer";
        OnnxModel failed = OnnxModel.Parse(proto.ToByteArray());
        NotSupportedException e = Assert.Throws<NotSupportedException>(() => OnnxOpsetUpgrader.Upgrade(failed, 15));
        Assert.Equal(proto, failed.Proto); // nothing half-upgraded
        Assert.Equal("Cannot upgrade node 'crop_layer' (Crop) from default-domain opset 8 to 15: it is not in the upgrader's table of operators known to keep their meaning or to have an adapter.", e.Message);

        ModelProto tooEarly = Model(8, [Node("Erf", ["x"], ["y"])], [Input("x", 2)], [Output("y")]);
        Assert.Contains("(Erf) from default-domain opset 8 to 13: it is not defined before opset 9", Assert.Throws<NotSupportedException>(() => OnnxOpsetUpgrader.Upgrade(OnnxModel.Parse(tooEarly.ToByteArray()))).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(13, 13)]
    [InlineData(14, 13)]
    [InlineData(17, 15)]
    public void ModelAtOrAboveTarget_IsUntouched(long opset, long target)
    {
        ModelProto proto = Model(opset, [Node("Softmax", ["x"], ["y"], Int("axis", 1))], [Unranked("x")], [Output("y")]);
        proto.IrVersion = 6;
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxOpsetUpgrader.Upgrade(model, target);
        Assert.Equal(proto, model.Proto);
    }

    [Fact]
    public void OldOpsetsAndBadTargets_AreRejected()
    {
        ModelProto old = Model(6, [Node("Relu", ["x"], ["y"])], [Input("x", 2)], [Output("y")]);
        Assert.Contains("opset 6", Assert.Throws<NotSupportedException>(() => OnnxOpsetUpgrader.Upgrade(OnnxModel.Parse(old.ToByteArray()))).Message, StringComparison.Ordinal);

        ModelProto good = Model(9, [Node("Relu", ["x"], ["y"])], [Input("x", 2)], [Output("y")]);
        Assert.Throws<ArgumentOutOfRangeException>(() => OnnxOpsetUpgrader.Upgrade(OnnxModel.Parse(good.ToByteArray()), 12));
        Assert.Throws<ArgumentOutOfRangeException>(() => OnnxOpsetUpgrader.Upgrade(OnnxModel.Parse(good.ToByteArray()), 22));
        Assert.Throws<ArgumentNullException>(() => OnnxOpsetUpgrader.Upgrade(null!));
    }

    /// <summary>Upgrades a real model, runs both on the same random input at the default optimisation level, compares within 1e-5 relative.</summary>
    private static OnnxModel AssertRealModelUpgrades(OnnxModel original, float low, float high)
    {
        InputTensor[] feeds = Feeds(original, low, high, seed: 1);
        Dictionary<string, (long[] Shape, double[] Values)> before = Run(original.Proto.ToByteArray(), feeds, GraphOptimizationLevel.ORT_ENABLE_ALL);
        OnnxModel upgraded = OnnxModel.Parse(original.Proto.ToByteArray());
        OnnxOpsetUpgrader.Upgrade(upgraded);
        Assert.Equal(13, upgraded.Opset);
        AssertSame(before, Run(upgraded.Proto.ToByteArray(), feeds, GraphOptimizationLevel.ORT_ENABLE_ALL), 1e-5);
        return upgraded;
    }

    /// <summary>Random inputs for every real input of a model (initializers listed as inputs by IR 3 excluded), 1 x 3 x 224 x 224 for images.</summary>
    private static InputTensor[] Feeds(OnnxModel model, float low, float high, int seed)
    {
        HashSet<string> initializers = [.. model.Proto.Graph.Initializer.Select(t => t.Name)];
        return [.. model.Proto.Graph.Input.Where(i => !initializers.Contains(i.Name)).Select(i =>
        {
            long[] shape = [.. i.Type.TensorType.Shape.Dim.Select(d => d.DimValue > 0 ? d.DimValue : 1)];
            Assert.Equal([1L, 3, 224, 224], shape);
            Random random = new(seed);
            float[] data = [.. Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => low + ((high - low) * random.NextSingle()))];
            return new InputTensor(i.Name, data, shape);
        })];
    }

    /// <summary>Runs the model before and after the upgrade (optimisations off, so kernels run as written) and compares every output.</summary>
    private static OnnxModel AssertUpgradeKeepsOutputs(ModelProto proto, InputTensor[] feeds, long target = 13, double tolerance = 0)
    {
        byte[] original = proto.ToByteArray();
        Dictionary<string, (long[] Shape, double[] Values)> before = Run(original, feeds, GraphOptimizationLevel.ORT_DISABLE_ALL);
        OnnxModel model = OnnxModel.Parse(original);
        OnnxOpsetUpgrader.Upgrade(model, target);
        Assert.Equal(target, model.Opset);
        Assert.Equal([target], model.Proto.OpsetImport.Where(o => o.Domain.Length == 0).Select(o => o.Version));
        Assert.True(model.Proto.IrVersion >= 7, $"IR version {model.Proto.IrVersion}");
        AssertSame(before, Run(model.Proto.ToByteArray(), feeds, GraphOptimizationLevel.ORT_DISABLE_ALL), tolerance);
        return model;
    }

    private static void AssertSame(Dictionary<string, (long[] Shape, double[] Values)> expected, Dictionary<string, (long[] Shape, double[] Values)> actual, double tolerance)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach ((string name, (long[] shape, double[] values)) in expected)
        {
            Assert.Equal(shape, actual[name].Shape);
            double largest = values.Select(Math.Abs).DefaultIfEmpty(0).Max();
            for (int i = 0; i < values.Length; i++)
            {
                double a = values[i], b = actual[name].Values[i];
                bool same = tolerance == 0
                    ? a.Equals(b)
                    : Math.Abs(a - b) <= (tolerance * Math.Max(Math.Abs(a), Math.Abs(b))) + (tolerance * 1e-3 * largest);
                Assert.True(same, $"output '{name}' [{i}]: before {a:R}, after {b:R}");
            }
        }
    }

    private static Dictionary<string, (long[] Shape, double[] Values)> Run(byte[] model, InputTensor[] feeds, GraphOptimizationLevel level)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = level };
        using InferenceSession session = new(model, options);
        using RunOptions runOptions = new();
        List<OrtValue> inputs = [.. feeds.Select(f => f.Data switch
        {
            float[] floats => OrtValue.CreateTensorValueFromMemory(floats, f.Shape),
            long[] longs => OrtValue.CreateTensorValueFromMemory(longs, f.Shape),
            bool[] bools => OrtValue.CreateTensorValueFromMemory(bools, f.Shape),
            _ => throw new ArgumentException($"input '{f.Name}' has an unexpected type"),
        })];
        try
        {
            string[] names = [.. session.OutputNames];
            using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(runOptions, [.. feeds.Select(f => f.Name)], inputs, names);
            Dictionary<string, (long[] Shape, double[] Values)> results = [];
            for (int o = 0; o < names.Length; o++)
            {
                OrtTensorTypeAndShapeInfo info = outputs[o].GetTensorTypeAndShape();
                double[] values = info.ElementDataType switch
                {
                    TensorElementType.Float => [.. outputs[o].GetTensorDataAsSpan<float>().ToArray().Select(v => (double)v)],
                    TensorElementType.Int64 => [.. outputs[o].GetTensorDataAsSpan<long>().ToArray().Select(v => (double)v)],
                    TensorElementType.Bool => [.. outputs[o].GetTensorDataAsSpan<bool>().ToArray().Select(v => v ? 1.0 : 0.0)],
                    _ => throw new InvalidOperationException($"output '{names[o]}' has type {info.ElementDataType}"),
                };
                results[names[o]] = (info.Shape, values);
            }

            return results;
        }
        finally
        {
            inputs.ForEach(i => i.Dispose());
        }
    }

    private static void AssertResize(NodeProto node, string mode)
    {
        Assert.Equal("Resize", node.OpType);
        Assert.Equal(3, node.Input.Count);
        Assert.Equal(string.Empty, node.Input[1]);
        Dictionary<string, string> attributes = node.Attribute.ToDictionary(a => a.Name, a => a.S.ToStringUtf8());
        Assert.Equal(mode, attributes["mode"]);
        Assert.Equal("asymmetric", attributes["coordinate_transformation_mode"]);
        Assert.Equal(mode == "nearest" ? "floor" : null, attributes.GetValueOrDefault("nearest_mode"));
    }

    private static double Cosine(double[] a, double[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += b[i] * b[i];
        }

        return dot / Math.Sqrt(na * nb);
    }

    /// <summary>A model as old exporters wrote it: the IR version of its opset's release, initializers also listed as inputs before IR 4.</summary>
    private static ModelProto Model(long opset, NodeProto[] nodes, ValueInfoProto[] inputs, ValueInfoProto[] outputs, TensorProto[]? initializers = null)
    {
        long ir = opset switch { <= 8 => 3, 9 => 4, 10 => 5, 11 => 6, 12 => 7, _ => 8 };
        GraphProto graph = new() { Name = "old", Node = { nodes }, Input = { inputs }, Output = { outputs }, Initializer = { initializers ?? [] } };
        if (ir < 4)
        {
            graph.Input.AddRange(graph.Initializer.Select(t => new ValueInfoProto { Name = t.Name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = t.DataType, Shape = Shape(t.Dims) } } }));
        }

        return new ModelProto { IrVersion = ir, ProducerName = "Quantization.Onnx.Tests", Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = opset } } };
    }

    private static int _nodeCount;

    /// <summary>A node named after its operator and a sequence number, e.g. <c>Split_3</c>.</summary>
    private static NodeProto Node(string op, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        int count = Interlocked.Increment(ref _nodeCount);
        return new() { Name = FormattableString.Invariant($"{op}_{count}"), OpType = op, Input = { inputs }, Output = { outputs }, Attribute = { attributes } };
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    private static AttributeProto Ints(string name, params long[] values) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { values } };

    private static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    private static AttributeProto FloatList(string name, params float[] values) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Floats, Floats = { values } };

    private static AttributeProto Str(string name, string value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    private static TensorProto Floats(string name, float[] values, params long[] dims) =>
        new() { Name = name, DataType = (int)DataType.Float, Dims = { dims }, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan())) };

    private static TensorProto Int64s(string name, long[] values, params long[] dims) =>
        new() { Name = name, DataType = (int)DataType.Int64, Dims = { dims }, Int64Data = { values } };

    private static ValueInfoProto Input(string name, params long[] dims) => Value(name, DataType.Float, Shape(dims));

    private static ValueInfoProto Input(string name, DataType type, params long[] dims) => Value(name, type, Shape(dims));

    private static ValueInfoProto Unranked(string name) => Value(name, DataType.Float, null);

    /// <summary>A graph output with its element type and no shape, as many exporters leave it.</summary>
    private static ValueInfoProto Output(string name, DataType type = DataType.Float) => Value(name, type, null);

    private static ValueInfoProto Value(string name, DataType type, TensorShapeProto? shape) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };

    private static TensorShapeProto Shape(IEnumerable<long> dims) => new() { Dim = { dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }) } };

    private static InputTensor Feed(string name, params long[] shape) =>
        new(name, Random((int)shape.Aggregate(1L, (a, b) => a * b), name.Sum(c => c)), shape);

    private static float[] Random(int count, int seed)
    {
        Random random = new(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (random.NextSingle() * 4) - 2)];
    }

    private static float[] Positive(int count, int seed) => [.. Random(count, seed).Select(v => Math.Abs(v) + 0.1f)];
}

/// <summary>A named input tensor for a test run.</summary>
internal sealed record InputTensor(string Name, Array Data, long[] Shape);

/// <summary>Reads int64 tensors written either way.</summary>
internal static class TensorProtoExtensions
{
    public static long[] Int64DataOrRaw(this TensorProto tensor) =>
        tensor.RawData.IsEmpty ? [.. tensor.Int64Data] : MemoryMarshal.Cast<byte, long>(tensor.RawData.Span).ToArray();
}
