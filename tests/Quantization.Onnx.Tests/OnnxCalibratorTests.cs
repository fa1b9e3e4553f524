using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

[Collection(nameof(MemoryMeasurements))]
public class OnnxCalibratorTests
{
    /// <summary>x [1, 262144] -> Mul(2) = doubled -> Relu = out: one 1 MiB intermediate per sample.</summary>
    private const int Width = 1 << 18;

    [Fact]
    public async Task ObservedRanges_AreThoseOfTheIntermediateTensors()
    {
        OnnxModel model = OnnxModel.Parse(DoubleRelu().ToByteArray());
        using OnnxCalibrator calibrator = new(model, ["x", "doubled", "out"], _ => new MinMaxObserver(QuantizationScheme.UInt8PerTensorAsymmetric()));
        float[][] samples = [.. Enumerable.Range(0, 3).Select(i => Random(Width, i, 2 + i))];
        Assert.Equal(3, await calibrator.RunAsync(CalibrationDataSource.FromBatches(samples.Select(s => Feed("x", s, 1, Width)))));

        float min = samples.Min(s => s.Min()), max = samples.Max(s => s.Max());
        RangeObserver x = (RangeObserver)calibrator.Observers["x"];
        RangeObserver doubled = (RangeObserver)calibrator.Observers["doubled"];
        RangeObserver relu = (RangeObserver)calibrator.Observers["out"];
        Assert.Equal((min, max), (x.Minimums[0], x.Maximums[0]));
        Assert.Equal((2 * min, 2 * max), (doubled.Minimums[0], doubled.Maximums[0]));
        Assert.Equal((0f, 2 * max), (relu.Minimums[0], relu.Maximums[0]));
        Assert.Equal(3L * Width, relu.ObservedCount);
        MinMaxObserver direct = new(QuantizationScheme.UInt8PerTensorAsymmetric());
        direct.Observe([2 * min, 2 * max], [2]);
        Assert.Equal(direct.ComputeParameters()[0], calibrator.ComputeParameters()["doubled"][0]);
    }

    [Theory]
    [InlineData(CalibrationMethod.MinMax)]
    [InlineData(CalibrationMethod.Percentile)]
    [InlineData(CalibrationMethod.Entropy)]
    [InlineData(CalibrationMethod.Mse)]
    public async Task Memory_DoesNotGrowWithTheNumberOfSamples(CalibrationMethod method)
    {
        // Keeping the outputs, as ONNX Runtime's Python calibrator does, would hold 2 MiB per sample: 900 MiB more
        // after 500 samples than after 50. Streaming holds one run's outputs at a time.
        OnnxModel model = OnnxModel.Parse(DoubleRelu().ToByteArray());
        float[] sample = Random(Width, 7, 4);
        using OnnxCalibrator calibrator = new(model, ["doubled", "out"], _ => method.CreateObserver(QuantizationScheme.UInt8PerTensorAsymmetric()));
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Samples(int count) => CalibrationDataSource.FromGenerator(count, _ => Feed("x", sample, 1, Width));

        await calibrator.RunAsync(Samples(50));
        (long managedAfter50, long residentAfter50) = Measure();
        await calibrator.RunAsync(Samples(500));
        (long managedAfter550, long residentAfter550) = Measure();

        Assert.Equal(550L * Width, calibrator.Observers["out"].ObservedCount);
        Assert.Single(calibrator.ComputeParameters()["out"].Scales.ToArray());
        Assert.True(managedAfter550 - managedAfter50 < 1 << 20, $"managed heap grew by {managedAfter550 - managedAfter50} bytes");
        Assert.True(residentAfter550 - residentAfter50 < 64 << 20, $"resident memory grew by {residentAfter550 - residentAfter50} bytes");
    }

    [Fact]
    public void UnknownAndNonFloatTensors_AreRejectedByName()
    {
        OnnxModel model = OnnxModel.Parse(DoubleRelu().ToByteArray());
        ModelProto withShape = DoubleRelu();
        withShape.Graph.Node.Add(Node("Shape", "shape", ["out"], ["out_shape"]));
        Assert.Contains("'nowhere'", Assert.Throws<ArgumentException>(() => new OnnxCalibrator(model, ["nowhere"], _ => new MinMaxObserver(QuantizationScheme.Int8PerTensor()))).Message, StringComparison.Ordinal);
        Assert.Contains("'out_shape'", Assert.Throws<ArgumentException>(() => new OnnxCalibrator(OnnxModel.Parse(withShape.ToByteArray()), ["out_shape"], _ => new MinMaxObserver(QuantizationScheme.Int8PerTensor()))).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WrongFeeds_FailWithOrtsMessage_AndCancellationStopsBetweenRuns()
    {
        OnnxModel model = OnnxModel.Parse(DoubleRelu().ToByteArray());
        using OnnxCalibrator calibrator = new(model, ["out"], _ => new MinMaxObserver(QuantizationScheme.Int8PerTensor()));
        await Assert.ThrowsAsync<OnnxRuntimeException>(() => calibrator.RunAsync(CalibrationDataSource.FromBatches([Feed("y", new float[Width], 1, Width)])));

        using CancellationTokenSource cancel = new();
        int runs = 0;
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> counted = CalibrationDataSource.FromGenerator(100, _ =>
        {
            runs++;
            return Feed("x", new float[Width], 1, Width);
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => calibrator.RunAsync(counted, new SynchronousProgress(cancel), cancel.Token));
        Assert.Equal(1, runs);
        Assert.Equal(Width, calibrator.Observers["out"].ObservedCount);
    }

    private static (long Managed, long Resident) Measure()
    {
        long managed = GC.GetTotalMemory(forceFullCollection: true);
        return (managed, Environment.WorkingSet);
    }

    private static ModelProto DoubleRelu() => Model(
        "double-relu",
        [Node("Mul", "double", ["x", "two"], ["doubled"]), Node("Relu", "relu", ["doubled"], ["out"])],
        [Tensor("two", [2f])],
        [Value("x", 1, Width)],
        [Value("out", 1, Width)]);

    private sealed class SynchronousProgress(CancellationTokenSource cancel) : IProgress<CalibrationProgress>
    {
        public void Report(CalibrationProgress value) => cancel.Cancel();
    }
}
