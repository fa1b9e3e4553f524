using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

public class OnnxSmoothQuantTests
{
    private const int Channels = 8;

    [Fact]
    public async Task LayerNormalization_FoldsIntoScaleAndBias_AndLeavesTheOutputsUnchanged()
    {
        ModelProto proto = LayerNormGraph();
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels]);

        OnnxSmoothQuantGroup group = Assert.Single(result.Groups);
        Assert.Equal(("y", "ln", OnnxScaleProducerKind.LayerNormalization), (group.Input, group.Producer, group.ProducerKind));
        Assert.Equal(["q", "k"], group.Consumers);
        Assert.Null(group.RestoreNode);
        Assert.Equal(0.5, group.Alpha);
        Assert.True(group.MaxInputAfter < group.MaxInputBefore / 2, $"the outlier channel should shrink: {group.MaxInputBefore} -> {group.MaxInputAfter}");
        Assert.Empty(result.Skipped);
        AssertSameOutputs(proto, model, [2, 5, Channels]);
    }

    [Fact]
    public async Task DecomposedLayerNorm_FoldsIntoGammaAndBeta_WithTheExactScales()
    {
        ModelProto proto = DecomposedGraph(residual: false, constantGamma: true);
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels]);

        OnnxSmoothQuantGroup group = Assert.Single(result.Groups);
        Assert.Equal(("y", "beta_add", OnnxScaleProducerKind.DecomposedLayerNormalization), (group.Input, group.Producer, group.ProducerKind));
        Assert.Equal(["gamma_mul", "beta_add"], group.ProducerNodes);
        Assert.Equal(["q", "k"], group.Consumers);
        AssertSameOutputs(proto, model, [2, 5, Channels]);

        // The definition: a_j = max |y_j| over the calibration tokens, w_j = max over q and k of |W[j, :]|, s_j = sqrt(a_j / w_j).
        double[] a = await ChannelMaxima(proto, "y", [2, 5, Channels]);
        float[] wq = Weight(proto, "wq"), wk = Weight(proto, "wk");
        double[] s = new double[Channels];
        for (int j = 0; j < Channels; j++)
        {
            double w = Math.Max(wq.Skip(j * 6).Take(6).Max(Math.Abs), wk.Skip(j * 4).Take(4).Max(Math.Abs));
            s[j] = Math.Max(Math.Sqrt(a[j]) / Math.Sqrt(w), 1e-5);
        }

        float[] smoothedQ = Weight(model.Proto, model.Proto.Graph.Node.Single(n => n.Name == "q").Input[1]);
        float[] gamma = Weight(proto, "gamma"), smoothedGamma = Weight(model.Proto, model.Proto.Graph.Node.Single(n => n.Name == "gamma_mul").Input[1]);
        for (int j = 0; j < Channels; j++)
        {
            Assert.Equal(gamma[j] / s[j], smoothedGamma[j], 1e-5 * Math.Abs(gamma[j] / s[j]));
            for (int n = 0; n < 6; n++)
            {
                Assert.Equal(wq[(j * 6) + n] * s[j], smoothedQ[(j * 6) + n], 1e-5 * Math.Abs(wq[(j * 6) + n] * s[j]) + 1e-12);
            }
        }

        Assert.Equal(a.Max(), group.MaxInputBefore, 1e-5 * a.Max());
        Assert.Equal(a.Select((v, j) => v / s[j]).Max(), group.MaxInputAfter, 1e-4);
        Assert.Equal(wq.Concat(wk).Max(Math.Abs), group.MaxWeightBefore, 1e-6);
    }

    [Fact]
    public async Task DecomposedRmsNorm_FoldsIntoGamma()
    {
        ModelProto proto = RmsGraph();
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels]);

        OnnxSmoothQuantGroup group = Assert.Single(result.Groups);
        Assert.Equal(("y", "gamma_mul", OnnxScaleProducerKind.DecomposedRmsNormalization), (group.Input, group.Producer, group.ProducerKind));
        AssertSameOutputs(proto, model, [2, 5, Channels]);
    }

    [Fact]
    public async Task PrecedingMatMulWithBias_TakesOneOverSOnItsOutputColumns()
    {
        ModelProto proto = LinearGraph(relu: false);
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, 6]);

        OnnxSmoothQuantGroup group = Assert.Single(result.Groups);
        Assert.Equal(("h", "fc1_bias", OnnxScaleProducerKind.Linear), (group.Input, group.Producer, group.ProducerKind));
        Assert.Equal(["fc1", "fc1_bias"], group.ProducerNodes);
        Assert.Equal(["fc2"], group.Consumers);
        OnnxSkippedScaleGroup input = Assert.Single(result.Skipped);
        Assert.Equal(("x", null), (input.Input, input.Producer));
        Assert.Contains("graph input", input.Reason, StringComparison.Ordinal);
        AssertSameOutputs(proto, model, [2, 5, 6]);
    }

    [Fact]
    public async Task GemmWithTransB_ScalesColumnsOfTheConsumerAndRowsOfTheProducer()
    {
        ModelProto proto = GemmGraph();
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [10, 6]);

        OnnxSmoothQuantGroup group = Assert.Single(result.Groups);
        Assert.Equal(("h", "g1", OnnxScaleProducerKind.Linear), (group.Input, group.Producer, group.ProducerKind));
        Assert.Equal(["g2"], group.Consumers);
        AssertSameOutputs(proto, model, [10, 6]);

        // g2's B is [5, 8] with transB: input channel j is column j, so each column is scaled by one factor.
        float[] before = Weight(proto, "w1"), after = Weight(model.Proto, model.Proto.Graph.Node.Single(n => n.Name == "g2").Input[1]);
        for (int j = 0; j < Channels; j++)
        {
            double factor = after[j] / (double)before[j];
            for (int n = 1; n < 5; n++)
            {
                Assert.Equal(factor, after[(n * Channels) + j] / (double)before[(n * Channels) + j], 1e-5 * factor);
            }
        }
    }

    [Fact]
    public async Task GraphOutput_IsRestoredUnderItsName()
    {
        ModelProto proto = LayerNormGraph();
        proto.Graph.Output.Add(Value("y", 2, 5, Channels));
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels]);

        OnnxSmoothQuantGroup group = Assert.Single(result.Groups);
        Assert.Equal("y", model.Proto.Graph.Node.Single(n => n.Name == group.RestoreNode).Output[0]);
        AssertSameOutputs(proto, model, [2, 5, Channels]);
    }

    [Fact]
    public async Task LayerThatIsConsumerAndProducer_TakesBothScalings()
    {
        // ln -> fc1 (+ bias) -> fc2: fc1's weight takes s of ln's group on its rows and 1/s of fc1's group on its columns.
        ModelProto proto = LayerNormGraph();
        proto.Graph.Node.RemoveAt(2);
        proto.Graph.Node.Add(Node("Add", "q_bias", ["q", "bq"], ["h"]));
        proto.Graph.Node.Add(Node("MatMul", "fc2", ["h", "w2"], ["o"]));
        proto.Graph.Initializer.Add(Tensor("bq", Random(6, 20), 6));
        proto.Graph.Initializer.Add(Tensor("w2", Random(6 * 3, 21), 6, 3));
        proto.Graph.Output.Clear();
        proto.Graph.Output.Add(Value("o", 2, 5, 3));
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels]);

        Assert.Equal([("y", OnnxScaleProducerKind.LayerNormalization), ("h", OnnxScaleProducerKind.Linear)], result.Groups.Select(g => (g.Input, g.ProducerKind)));
        Assert.Equal(["q", "q_bias"], result.Groups[1].ProducerNodes);
        AssertSameOutputs(proto, model, [2, 5, Channels]);
    }

    [Fact]
    public async Task NonlinearityBetween_IsRefused()
    {
        ModelProto proto = LinearGraph(relu: true);
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, 6]);

        Assert.Empty(result.Groups);
        OnnxSkippedScaleGroup skipped = Assert.Single(result.Skipped, s => s.Input == "hr");
        Assert.Equal("act", skipped.Producer);
        Assert.Equal(["fc2"], skipped.Consumers);
        Assert.Contains("Relu", skipped.Reason, StringComparison.Ordinal);
        Assert.Equal(proto.ToByteArray(), model.Proto.ToByteArray());
    }

    [Fact]
    public async Task NonConstantGamma_IsRefused()
    {
        ModelProto proto = DecomposedGraph(residual: false, constantGamma: false);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        float[] gamma = Gamma();
        OnnxSmoothQuantResult result = await OnnxSmoothQuant.SmoothAsync(model, CalibrationDataSource.FromBatches(Enumerable.Range(0, 4).Select(i => (IReadOnlyCollection<NamedOnnxValue>)
            [.. Feed("x", Input(i, [2, 5, Channels]), 2, 5, Channels), .. Feed("gamma", gamma, Channels)])));

        Assert.Empty(result.Groups);
        OnnxSkippedScaleGroup skipped = Assert.Single(result.Skipped);
        Assert.Equal(("y", "beta_add"), (skipped.Input, skipped.Producer));
        Assert.Contains("gamma_mul", skipped.Reason, StringComparison.Ordinal);
        Assert.Equal(proto.ToByteArray(), model.Proto.ToByteArray());
    }

    [Fact]
    public async Task ResidualReader_IsSkipped_OrCompensated_AsThePolicySays()
    {
        ModelProto proto = DecomposedGraph(residual: true, constantGamma: true);
        OnnxSmoothQuantOptions skip = new() { OtherConsumers = OnnxOtherConsumerPolicy.Skip };
        (OnnxModel untouched, OnnxSmoothQuantResult skippedResult) = await Smooth(proto, [2, 5, Channels], skip);
        Assert.Empty(skippedResult.Groups);
        OnnxSkippedScaleGroup skipped = Assert.Single(skippedResult.Skipped);
        Assert.Contains("'residual' (Add)", skipped.Reason, StringComparison.Ordinal);
        Assert.Equal(proto.ToByteArray(), untouched.Proto.ToByteArray());

        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels]);
        OnnxSmoothQuantGroup group = Assert.Single(result.Groups);
        Assert.NotNull(group.RestoreNode);
        NodeProto restore = model.Proto.Graph.Node.Single(n => n.Name == group.RestoreNode);
        Assert.Equal(("Mul", "y"), (restore.OpType, restore.Output[0]));
        Assert.Equal(["y"], model.Proto.Graph.Node.Where(n => n.Name == "residual").Select(n => n.Input[0]));
        Assert.All(model.Proto.Graph.Node.Where(n => n.Name is "q" or "k"), n => Assert.Equal(restore.Input[0], n.Input[0]));
        AssertSameOutputs(proto, model, [2, 5, Channels]);
    }

    [Fact]
    public async Task AlphaSearch_PicksTheLeastError_TiesToTheSmallerAlpha()
    {
        ModelProto proto = LayerNormGraph();
        OnnxSmoothQuantOptions options = new() { SearchAlpha = true };
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels], options);

        OnnxSmoothQuantGroup group = Assert.Single(result.Groups);
        IReadOnlyDictionary<double, double> errors = group.SearchErrors!;
        Assert.Equal(21, errors.Count);
        double least = errors.Values.Min();
        Assert.Equal(errors.Where(e => e.Value == least).Min(e => e.Key), group.Alpha);
        Assert.True(errors[group.Alpha] <= errors[0.5]);
        Assert.True(errors[group.Alpha] < errors[0], "with an outlier channel, some smoothing must beat none");
        AssertSameOutputs(proto, model, [2, 5, Channels]);

        // The search is deterministic: a second run picks the same α with the same errors.
        (_, OnnxSmoothQuantResult again) = await Smooth(proto, [2, 5, Channels], options);
        Assert.Equal(errors, again.Groups[0].SearchErrors!);
    }

    [Fact]
    public async Task NamePatterns_LeaveGroupsAlone()
    {
        ModelProto proto = LayerNormGraph();
        OnnxSmoothQuantOptions options = new() { ExcludeNodes = { new NamePattern("k") } };
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels], options);

        Assert.Empty(result.Groups);
        Assert.Contains("'k'", Assert.Single(result.Skipped).Reason, StringComparison.Ordinal);
        Assert.Equal(proto.ToByteArray(), model.Proto.ToByteArray());
    }

    [Fact]
    public async Task Cancellation_LeavesTheModelUnchanged()
    {
        ModelProto proto = LayerNormGraph();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        using CancellationTokenSource cancel = new();
        Progress<CalibrationProgress> progress = new();
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> data = CalibrationDataSource.FromGenerator(8, i =>
        {
            if (i == 3)
            {
                cancel.Cancel();
            }

            return Feed("x", Input(i, [2, 5, Channels]), 2, 5, Channels);
        });

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => OnnxSmoothQuant.SmoothAsync(model, data, new OnnxSmoothQuantOptions { SearchAlpha = true }, progress, cancel.Token));
        Assert.Equal(proto.ToByteArray(), model.Proto.ToByteArray());
    }

    [Fact]
    public async Task BadArguments_AreRefused()
    {
        OnnxModel model = OnnxModel.Parse(LayerNormGraph().ToByteArray());
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> data = Batches([2, 5, Channels]);
        await Assert.ThrowsAsync<ArgumentNullException>(() => OnnxSmoothQuant.SmoothAsync(null!, data));
        await Assert.ThrowsAsync<ArgumentNullException>(() => OnnxSmoothQuant.SmoothAsync(model, null!));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => OnnxSmoothQuant.SmoothAsync(model, data, new OnnxSmoothQuantOptions { Alpha = 1.5 }));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => OnnxSmoothQuant.SmoothAsync(model, data, new OnnxSmoothQuantOptions { Alpha = double.NaN }));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => OnnxSmoothQuant.SmoothAsync(model, data, new OnnxSmoothQuantOptions { SearchRows = 0 }));
        OnnxSmoothQuantOptions badGrid = new() { SearchAlpha = true };
        badGrid.AlphaGrid.Add(-0.1);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => OnnxSmoothQuant.SmoothAsync(model, data, badGrid));
        await Assert.ThrowsAsync<ArgumentException>(() => OnnxSmoothQuant.SmoothAsync(model, data, new OnnxSmoothQuantOptions { ActivationScheme = QuantizationScheme.Int8PerChannel() }));
        await Assert.ThrowsAsync<InvalidOperationException>(() => OnnxSmoothQuant.SmoothAsync(model, CalibrationDataSource.FromBatches(Array.Empty<IReadOnlyCollection<NamedOnnxValue>>())));

        float[] poisoned = Input(0, [2, 5, Channels]);
        poisoned[7] = float.NaN;
        await Assert.ThrowsAsync<NonFiniteValueException>(() => OnnxSmoothQuant.SmoothAsync(model, CalibrationDataSource.FromBatches([Feed("x", poisoned, 2, 5, Channels)])));
        Assert.Equal(LayerNormGraph().ToByteArray(), model.Proto.ToByteArray());
    }

    [Fact]
    public async Task NonFiniteWeight_LeavesTheGroupAlone()
    {
        ModelProto proto = LayerNormGraph();
        float[] wk = Random(Channels * 4, 9);
        wk[4 * 5] = float.PositiveInfinity;
        proto.Graph.Initializer[proto.Graph.Initializer.IndexOf(proto.Graph.Initializer.Single(t => t.Name == "wk"))] = Tensor("wk", wk, Channels, 4);
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, Channels]);

        Assert.Empty(result.Groups);
        Assert.Contains("input row 5", Assert.Single(result.Skipped).Reason, StringComparison.Ordinal);
        Assert.Equal(proto.ToByteArray(), model.Proto.ToByteArray());
    }

    [Fact]
    public async Task ExplicitScales_SmoothLayersAfterNonlinearOpsAndGraphInputs_AndLeaveTheOutputsUnchanged()
    {
        // x (a graph input) -> fc1 -> bias -> Relu -> fc2; the Relu's output is also a graph output, which must still see it unscaled.
        ModelProto proto = LinearGraph(relu: true);
        proto.Graph.Output.Add(Value("hr", 2, 5, Channels));
        (OnnxModel model, OnnxSmoothQuantResult result) = await Smooth(proto, [2, 5, 6], new OnnxSmoothQuantOptions { ExplicitScales = true });

        Assert.Empty(result.Skipped);
        Assert.Equal([("x", "fc1"), ("hr", "fc2")], result.Groups.Select(g => (g.Input, Assert.Single(g.Consumers))));
        GraphProto graph = model.Proto.Graph;
        foreach (OnnxSmoothQuantGroup group in result.Groups)
        {
            Assert.Equal(OnnxScaleProducerKind.ExplicitScale, group.ProducerKind);
            Assert.Null(group.RestoreNode);
            NodeProto mul = graph.Node.Single(n => n.Name == group.Producer);
            Assert.Equal([group.Producer], group.ProducerNodes);
            Assert.Equal("Mul", mul.OpType);
            Assert.Equal(group.Input, mul.Input[0]);
            Assert.Equal(mul.Output[0], graph.Node.Single(n => n.Name == group.Consumers[0]).Input[0]);
            Assert.Equal([mul.Output[0]], graph.Node.Where(n => n.Input.Contains(mul.Output[0])).Select(n => n.Input[0]));
        }

        Assert.Equal("hr", graph.Node.Single(n => n.Name == "act").Output[0]);
        AssertSameOutputs(proto, model, [2, 5, 6]);

        // The definition: s_j = max(sqrt(a_j / w_j), 1e-5); the Mul holds 1/s_j and fc2's input row j is multiplied by s_j.
        double[] a = await ChannelMaxima(proto, "hr", [2, 5, 6]);
        float[] w1 = Weight(proto, "w1");
        NodeProto fc2 = graph.Node.Single(n => n.Name == "fc2");
        float[] inverse = Weight(model.Proto, graph.Node.Single(n => n.Name == result.Groups[1].Producer).Input[1]), smoothed = Weight(model.Proto, fc2.Input[1]);
        for (int j = 0; j < Channels; j++)
        {
            double w = w1.Skip(j * 5).Take(5).Max(Math.Abs);
            double s = a[j] == 0 ? 1 : Math.Max(Math.Sqrt(a[j] / w), 1e-5);
            Assert.Equal(1 / s, inverse[j], 1e-5 / s);
            for (int n = 0; n < 5; n++)
            {
                Assert.Equal(w1[(j * 5) + n] * s, smoothed[(j * 5) + n], (1e-5 * Math.Abs(w1[(j * 5) + n] * s)) + 1e-12);
            }
        }
    }

    [Fact]
    public async Task DynamicActivations_QuantizeTheSampleOverItsOwnRange()
    {
        // 6 batches of 10 tokens: with room for all 60, the sample's range is the calibrated range, so both measures agree.
        OnnxSmoothQuantResult staticAll = (await Smooth(LayerNormGraph(), [2, 5, Channels], Search(dynamic: false, rows: 60))).Result;
        OnnxSmoothQuantResult dynamicAll = (await Smooth(LayerNormGraph(), [2, 5, Channels], Search(dynamic: true, rows: 60))).Result;
        IReadOnlyDictionary<double, double> expected = staticAll.Groups.Single().SearchErrors!, actual = dynamicAll.Groups.Single().SearchErrors!;
        Assert.All(expected, e => Assert.Equal(e.Value, actual[e.Key], 1e-9 * e.Value));

        // With 3 sampled tokens, their range is narrower than the calibrated one: finer steps, less error over the grid.
        OnnxSmoothQuantResult staticFew = (await Smooth(LayerNormGraph(), [2, 5, Channels], Search(dynamic: false, rows: 3))).Result;
        OnnxSmoothQuantResult dynamicFew = (await Smooth(LayerNormGraph(), [2, 5, Channels], Search(dynamic: true, rows: 3))).Result;
        double staticError = staticFew.Groups.Single().SearchErrors!.Values.Sum(), dynamicError = dynamicFew.Groups.Single().SearchErrors!.Values.Sum();
        Assert.True(dynamicError < staticError, $"dynamic {dynamicError}, static {staticError}");

        static OnnxSmoothQuantOptions Search(bool dynamic, int rows) => new() { SearchAlpha = true, DynamicActivations = dynamic, SearchRows = rows };
    }

    /// <summary>Inputs with one outlier channel (1), 30 times the others.</summary>
    private static float[] Input(int seed, int[] shape)
    {
        float[] values = Random(shape.Aggregate(1, (a, b) => a * b), seed, 2);
        for (int i = 1; i < values.Length; i += shape[^1])
        {
            values[i] *= 30;
        }

        return values;
    }

    private static ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Batches(int[] shape) =>
        CalibrationDataSource.FromBatches(Enumerable.Range(0, 6).Select(i => Feed("x", Input(i, shape), shape)));

    private static async Task<(OnnxModel Model, OnnxSmoothQuantResult Result)> Smooth(ModelProto proto, int[] shape, OnnxSmoothQuantOptions? options = null)
    {
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxSmoothQuantResult result = await OnnxSmoothQuant.SmoothAsync(model, Batches(shape), options);
        return (model, result);
    }

    /// <summary>Runs both models on held-out inputs: every output has cosine above 0.99999 and a small largest error.</summary>
    private static void AssertSameOutputs(ModelProto original, OnnxModel smoothed, int[] shape)
    {
        using InferenceSession before = new(original.ToByteArray()), after = new(smoothed.Proto.ToByteArray());
        foreach (int seed in new[] { 100, 101, 102 })
        {
            IReadOnlyCollection<NamedOnnxValue> feed = Feed("x", Input(seed, shape), shape);
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> expected = before.Run(feed), actual = after.Run(feed);
            foreach (DisposableNamedOnnxValue output in expected)
            {
                float[] e = [.. output.AsEnumerable<float>()], a = [.. actual.Single(o => o.Name == output.Name).AsEnumerable<float>()];
                double largest = e.Max(Math.Abs);
                double error = e.Zip(a, (x, y) => Math.Abs(x - (double)y)).Max();
                Assert.True(Cosine(e, a) > 0.99999, $"output {output.Name}: cosine {Cosine(e, a)}");
                Assert.True(error <= 1e-4 * largest, $"output {output.Name}: largest error {error} of {largest}");
            }
        }
    }

    /// <summary>max |v_j| per channel of a value over the calibration batches, through the public calibrator.</summary>
    private static async Task<double[]> ChannelMaxima(ModelProto proto, string value, int[] shape)
    {
        using OnnxCalibrator calibrator = new(OnnxModel.Parse(proto.ToByteArray()), [value], _ => new MinMaxObserver(QuantizationScheme.Int8PerChannel(-1)));
        await calibrator.RunAsync(Batches(shape));
        MinMaxObserver observer = (MinMaxObserver)calibrator.Observers[value];
        return [.. Enumerable.Range(0, observer.Minimums.Length).Select(j => (double)Math.Max(-observer.Minimums[j], observer.Maximums[j]))];
    }

    private static float[] Weight(ModelProto proto, string name) =>
        OnnxModel.Parse(proto.ToByteArray()).ReadFloats(proto.Graph.Initializer.Single(t => t.Name == name));

    private static float[] Gamma()
    {
        float[] gamma = Random(Channels, 7, 2);
        gamma[3] = 12; // an outlier channel of the normalization's output
        return gamma;
    }

    private static IEnumerable<TensorProto> Consumers() =>
        [Tensor("wq", Random(Channels * 6, 8), Channels, 6), Tensor("wk", Random(Channels * 4, 9), Channels, 4)];

    private static IEnumerable<NodeProto> ConsumerNodes() =>
        [Node("MatMul", "q", ["y", "wq"], ["q"]), Node("MatMul", "k", ["y", "wk"], ["k"])];

    private static ModelProto LayerNormGraph() => Model(
        "layernorm",
        [Node("LayerNormalization", "ln", ["x", "gamma", "beta"], ["y"], Int("axis", -1)), .. ConsumerNodes()],
        [Tensor("gamma", Gamma(), Channels), Tensor("beta", Random(Channels, 10), Channels), .. Consumers()],
        [Value("x", 2, 5, Channels)],
        [Value("q", 2, 5, 6), Value("k", 2, 5, 4)],
        opset: 17);

    private static ModelProto DecomposedGraph(bool residual, bool constantGamma)
    {
        List<NodeProto> nodes =
        [
            Node("ReduceMean", "mean", ["x"], ["mu"], Ints("axes", -1)),
            Node("Sub", "sub", ["x", "mu"], ["d"]),
            Node("Pow", "pow", ["d", "two"], ["d2"]),
            Node("ReduceMean", "var", ["d2"], ["v"], Ints("axes", -1)),
            Node("Add", "add_eps", ["v", "eps"], ["ve"]),
            Node("Sqrt", "sqrt", ["ve"], ["sd"]),
            Node("Div", "div", ["d", "sd"], ["n"]),
            Node("Mul", "gamma_mul", ["n", "gamma"], ["g"]),
            Node("Add", "beta_add", ["g", "beta"], ["y"]),
            .. ConsumerNodes(),
        ];
        List<ValueInfoProto> outputs = [Value("q", 2, 5, 6), Value("k", 2, 5, 4)];
        if (residual)
        {
            nodes.Add(Node("Add", "residual", ["y", "x"], ["r"]));
            outputs.Add(Value("r", 2, 5, Channels));
        }

        List<TensorProto> initializers = [Tensor("two", [2f]), Tensor("eps", [1e-5f]), Tensor("beta", Random(Channels, 10), Channels), .. Consumers()];
        List<ValueInfoProto> inputs = [Value("x", 2, 5, Channels)];
        if (constantGamma)
        {
            initializers.Add(Tensor("gamma", Gamma(), Channels));
        }
        else
        {
            inputs.Add(Value("gamma", Channels));
        }

        return Model("decomposed", nodes, initializers, inputs, outputs);
    }

    private static ModelProto RmsGraph() => Model(
        "rms",
        [
            Node("Pow", "pow", ["x", "two"], ["x2"]),
            Node("ReduceMean", "ms", ["x2"], ["m"], Ints("axes", -1)),
            Node("Add", "add_eps", ["m", "eps"], ["me"]),
            Node("Sqrt", "sqrt", ["me"], ["rms"]),
            Node("Div", "div", ["x", "rms"], ["n"]),
            Node("Mul", "gamma_mul", ["n", "gamma"], ["y"]),
            .. ConsumerNodes(),
        ],
        [Tensor("two", [2f]), Tensor("eps", [1e-6f]), Tensor("gamma", Gamma(), Channels), .. Consumers()],
        [Value("x", 2, 5, Channels)],
        [Value("q", 2, 5, 6), Value("k", 2, 5, 4)]);

    private static ModelProto LinearGraph(bool relu)
    {
        float[] w0 = Random(6 * Channels, 11);
        for (int k = 0; k < 6; k++)
        {
            w0[(k * Channels) + 2] *= 20; // output channel 2 of fc1 is an outlier of fc2's input
        }

        List<NodeProto> nodes = [Node("MatMul", "fc1", ["x", "w0"], ["h0"]), Node("Add", "fc1_bias", ["h0", "b0"], ["h"])];
        nodes.AddRange(relu ? [Node("Relu", "act", ["h"], ["hr"]), Node("MatMul", "fc2", ["hr", "w1"], ["o"])] : [Node("MatMul", "fc2", ["h", "w1"], ["o"])]);
        return Model(
            "linear",
            nodes,
            [Tensor("w0", w0, 6, Channels), Tensor("b0", Random(Channels, 12), Channels), Tensor("w1", Random(Channels * 5, 13), Channels, 5)],
            [Value("x", 2, 5, 6)],
            [Value("o", 2, 5, 5)]);
    }

    private static ModelProto GemmGraph()
    {
        float[] w0 = Random(Channels * 6, 14);
        for (int k = 0; k < 6; k++)
        {
            w0[(2 * 6) + k] *= 20; // output channel 2 of g1 (row 2 of its transposed weight)
        }

        return Model(
            "gemm",
            [Node("Gemm", "g1", ["x", "w0", "c0"], ["h"], Int("transB", 1)), Node("Gemm", "g2", ["h", "w1", "c1"], ["o"], Int("transB", 1))],
            [Tensor("w0", w0, Channels, 6), Tensor("c0", Random(Channels, 15), Channels), Tensor("w1", Random(5 * Channels, 16), 5, Channels), Tensor("c1", Random(5, 17), 5)],
            [Value("x", 10, 6)],
            [Value("o", 10, 5)]);
    }
}
