using Microsoft.Extensions.Logging;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Calibration;

[Collection(MemoryMeasurements.Name)]
public class CalibratorTests
{
    private static readonly QuantizationScheme Activations = QuantizationScheme.UInt8PerTensorAsymmetric();
    private static readonly float[][] TwoBatches = [[-1f, 2f], [0.5f, 6f]];

    [Fact]
    public async Task Run_FoldsEveryNamedActivationIntoItsObserver_AndLogsAndReportsProgress()
    {
        ListLogger logger = new();
        Calibrator calibrator = new(_ => new MinMaxObserver(Activations), logger);
        List<CalibrationProgress> progress = [];
        int batches = await calibrator.RunAsync(
            CalibrationDataSource.FromBatches(TwoBatches),
            (batch, recorder, _) =>
            {
                recorder.Record("input", batch, [2]);
                recorder.Record("relu", batch.Select(v => Math.Max(v, 0f)).ToArray(), [2]);
                return ValueTask.CompletedTask;
            },
            new SynchronousProgress<CalibrationProgress>(progress));

        Assert.Equal(2, batches);
        Assert.Equal([new CalibrationProgress(1, 2), new CalibrationProgress(2, 2)], progress);
        IReadOnlyDictionary<string, QuantizationParameters> parameters = calibrator.ComputeParameters();
        Assert.Equal(NumericConvention.Onnx.ComputeParameters(-1f, 6f, QuantizedType.UInt8, false), parameters["input"][0]);
        Assert.Equal(NumericConvention.Onnx.ComputeParameters(0f, 6f, QuantizedType.UInt8, false), parameters["relu"][0]);
        Assert.Contains(logger.Lines, l => l.Contains("2 batches, 2 tensors", StringComparison.Ordinal));
    }

    [Fact]
    public async Task TenThousandBatches_KeepMemoryFlat()
    {
        // Batches come from a generator and are never kept; observers hold O(channels). The heap left after 10,000
        // batches is the heap left after 1,000.
        Calibrator calibrator = new(_ => new MinMaxObserver(QuantizationScheme.Int8PerChannel(1)));
        CalibrationStep<float[]> step = (batch, recorder, _) =>
        {
            recorder.Record("hidden", batch, [4, 256]);
            return ValueTask.CompletedTask;
        };
        float[] Make(int i) => Enumerable.Range(0, 1024).Select(j => MathF.Sin(i + j)).ToArray();

        await calibrator.RunAsync(CalibrationDataSource.FromGenerator(1_000, Make), step);
        long afterThousand = GC.GetTotalMemory(forceFullCollection: true);
        await calibrator.RunAsync(CalibrationDataSource.FromGenerator(10_000, Make), step);
        long afterTenThousand = GC.GetTotalMemory(forceFullCollection: true);
        Assert.True(afterTenThousand - afterThousand < 256 * 1024, $"retained heap grew from {afterThousand} to {afterTenThousand} bytes");
        Assert.Equal(11_000L * 1024, calibrator.Observers["hidden"].ObservedCount);
    }

    [Fact]
    public async Task Cancellation_LeavesObserversUsable_AndARunOnTheRestResumes()
    {
        float[][] data = Enumerable.Range(0, 100).Select(i => Enumerable.Range(0, 8).Select(j => (float)Math.Sin((i * 8) + j) * (1 + i)).ToArray()).ToArray();
        CalibrationStep<float[]> step = (batch, recorder, _) =>
        {
            recorder.Record("x", batch, [2, 4]);
            return ValueTask.CompletedTask;
        };

        using CancellationTokenSource cancel = new();
        Calibrator calibrator = new(_ => new MinMaxObserver(QuantizationScheme.Int8PerChannel()));
        int done = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => calibrator.RunAsync(
            CalibrationDataSource.FromBatches(data),
            async (batch, recorder, token) =>
            {
                await step(batch, recorder, token);
                if (++done == 40)
                {
                    await cancel.CancelAsync();
                }
            },
            cancellationToken: cancel.Token));

        Assert.Equal(40 * 8, calibrator.Observers["x"].ObservedCount);
        Assert.Equal(2, calibrator.ComputeParameters()["x"].Count);

        await calibrator.RunAsync(CalibrationDataSource.FromBatches(data[40..]), step);
        Calibrator whole = new(_ => new MinMaxObserver(QuantizationScheme.Int8PerChannel()));
        await whole.RunAsync(CalibrationDataSource.FromBatches(data), step);
        Assert.Equal(whole.ComputeParameters()["x"].Scales.ToArray(), calibrator.ComputeParameters()["x"].Scales.ToArray());
    }

    [Fact]
    public async Task NpyDirectory_IsReadInNameOrder()
    {
        string directory = Directory.CreateTempSubdirectory("calibration-").FullName;
        try
        {
            for (int i = 0; i < 3; i++)
            {
                await File.WriteAllBytesAsync(Path.Combine(directory, $"batch{i}.npy"), NpyReaderTests.Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", NpyReaderTests.Floats(false, i, -i)));
            }

            ICalibrationDataSource<NpyArray> source = CalibrationDataSource.FromNpyDirectory(directory);
            Assert.Equal(3, source.Count);
            List<float> firsts = [];
            await foreach (NpyArray array in source.ReadBatchesAsync())
            {
                firsts.Add(array.Data[0]);
            }

            Assert.Equal([0f, 1f, 2f], firsts);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }

        Assert.Throws<DirectoryNotFoundException>(() => CalibrationDataSource.FromNpyDirectory(directory));
    }

    [Fact]
    public void BadArguments_Throw()
    {
        Assert.Throws<ArgumentNullException>(() => new Calibrator(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => CalibrationDataSource.FromGenerator(-1, i => i));
        Assert.Throws<ArgumentNullException>(() => CalibrationDataSource.FromBatches<int>(null!));
    }

    private sealed class SynchronousProgress<T>(List<T> reports) : IProgress<T>
    {
        public void Report(T value) => reports.Add(value);
    }

    private sealed class ListLogger : ILogger
    {
        public List<string> Lines { get; } = [];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add(formatter(state, exception));
    }
}
