using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>Automatic mixed precision: the sensitivity pass finds the layer whose activation quantization hurts, and the search keeps just that one in float.</summary>
public class MixedPrecisionTests
{
    private const int Tokens = 8, Hidden = 16;

    [Fact]
    public async Task KeepsTheFewestLayersInFloat_ToReachTheTarget()
    {
        ModelProto proto = TwoBranches();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        // At the basic level: at its default level ONNX Runtime runs a weight-only MatMul with int8 activations per block
        // (MatMulNBits, accuracy level 4), which this model's outlier channel defeats too.
        using SessionOptions basic = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC };
        OnnxStaticQuantizationOptions options = new() { MixedPrecision = new OnnxMixedPrecisionOptions { TargetCosine = 0.999, MaxBatches = 6 } };
        options.Calibration.SessionOptions = basic;
        OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, Inputs(8), options);

        OnnxMixedPrecisionResult search = Assert.IsType<OnnxMixedPrecisionResult>(result.MixedPrecision);
        Assert.Equal(6, search.Batches);
        Assert.Equal(["outlier", "plain"], search.Layers.Select(l => l.Node));
        Assert.True(search.Layers[0].Cosine < search.Layers[1].Cosine);
        Assert.True(search.AllQuantizedCosine < 0.999, $"the test needs a model that misses the target when fully quantized: {search.AllQuantizedCosine}");
        Assert.Equal(["outlier"], search.KeptInFloat);
        Assert.True(search.ReachesTarget && search.FinalCosine >= 0.999, $"final {search.FinalCosine}");
        Assert.Equal(["x"], result.Activations.Keys);
        Assert.Equal("scaled", model.Proto.Graph.Node.Single(n => n.Name == "outlier").Input[0]);

        // The model it keeps is the one it measured: its outputs on a calibration feed match the float model's as closely.
        float[] input = Random(Tokens * Hidden, 0, 2);
        double cosine = Cosine(RunSingle(proto.ToByteArray(), "x", input, [1, Tokens, Hidden]), RunSingle(model.Proto.ToByteArray(), "x", input, [1, Tokens, Hidden]));
        Assert.True(cosine >= 0.999, $"cosine {cosine}");
    }

    [Fact]
    public async Task AReachableTarget_KeepsNothing_AndTheSynchronousQuantize_RefusesTheSearch()
    {
        OnnxModel model = OnnxModel.Parse(TwoBranches().ToByteArray());
        OnnxStaticQuantizationOptions options = new() { MixedPrecision = new OnnxMixedPrecisionOptions { TargetCosine = 0.1 } };
        Assert.Throws<NotSupportedException>(() => OnnxStaticQuantizer.Quantize(model, new Dictionary<string, QuantizationParameters>(), options));
        OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, Inputs(4), options);
        Assert.Empty(result.MixedPrecision!.KeptInFloat);
        Assert.Equal(["x", "scaled"], result.Activations.Keys);
        Assert.Throws<ArgumentOutOfRangeException>(() => new OnnxMixedPrecisionOptions { TargetCosine = 1.5 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new OnnxMixedPrecisionOptions { MaxBatches = 0 });
    }

    [Fact]
    public async Task CancellationDuringTheSearch_LeavesTheModelUnchanged()
    {
        ModelProto proto = TwoBranches();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        using CancellationTokenSource cancel = new();
        OnnxStaticQuantizationOptions options = new() { MixedPrecision = new OnnxMixedPrecisionOptions() };
        CancellingLogger logger = new(cancel);
        options.Calibration.Logger = logger;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => OnnxStaticQuantizer.QuantizeAsync(model, Inputs(4), options, cancellationToken: cancel.Token));
        Assert.True(logger.Cancelled, "the search should have started before it was cancelled");
        Assert.Equal(proto, model.Proto);
    }

    /// <summary>
    /// x -> MatMul(wa) = ya (the "plain" layer); x * c = scaled, where c makes channel 0 a thousand times larger, ->
    /// MatMul(wb) = yb (the "outlier" layer, whose weight row for channel 0 is tiny, so the other channels carry its output);
    /// out = ya + yb. One range for all of "scaled" rounds its ordinary channels to nothing.
    /// </summary>
    private static ModelProto TwoBranches()
    {
        float[] c = [.. Enumerable.Range(0, Hidden).Select(i => i == 0 ? 1000f : 1f)];
        float[] wb = Random(Hidden * Hidden, 3);
        for (int j = 0; j < Hidden; j++)
        {
            wb[j] *= 1e-4f;
        }

        return Model(
            "two-branches",
            [
                Node("MatMul", "plain", ["x", "wa"], ["ya"]),
                Node("Mul", "scale", ["x", "c"], ["scaled"]),
                Node("MatMul", "outlier", ["scaled", "wb"], ["yb"]),
                Node("Add", "sum", ["ya", "yb"], ["out"]),
            ],
            [Tensor("wa", Random(Hidden * Hidden, 2, 0.2f), Hidden, Hidden), Tensor("c", c, Hidden), Tensor("wb", wb, Hidden, Hidden)],
            [Value("x", 1, Tokens, Hidden)],
            [Value("out", 1, Tokens, Hidden)]);
    }

    private static ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Inputs(int count) =>
        CalibrationDataSource.FromGenerator(count, i => Feed("x", Random(Tokens * Hidden, i, 2), 1, Tokens, Hidden));

    /// <summary>Cancels at the search's first evaluation.</summary>
    private sealed class CancellingLogger(CancellationTokenSource cancel) : Microsoft.Extensions.Logging.ILogger
    {
        public bool Cancelled { get; private set; }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (formatter(state, exception).StartsWith("Mixed precision", StringComparison.Ordinal))
            {
                Cancelled = true;
                cancel.Cancel();
            }
        }
    }
}
